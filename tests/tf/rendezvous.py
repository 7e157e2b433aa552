"""A torch.distributed-style rendezvous with the standard library only, to
prove the `env://` variables `mezz tf run --flavor pytorch` hands out: rank
0 listens on MASTER_ADDR:MASTER_PORT, every rank (rank 0 too) connects and
says its RANK and WORLD_SIZE, and rank 0 answers all of them once WORLD_SIZE
ranks came, with distinct ranks and one world size, or says they did not
agree. Exits 0 only when they agreed."""
import json
import os
import socket
import sys
import threading
import time

addr = os.environ["MASTER_ADDR"]
port = int(os.environ["MASTER_PORT"])
rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
print(f"rank {rank} of {world}: master {addr}:{port}", flush=True)


def serve(server):
    conns, hellos = [], []
    while len(conns) < world:
        conn, _ = server.accept()
        conn.settimeout(60)
        hellos.append(json.loads(conn.makefile().readline()))
        conns.append(conn)
    ranks = sorted(h["rank"] for h in hellos)
    agreed = ranks == list(range(world)) and all(h["world"] == world for h in hellos)
    verdict = f"{'agreed' if agreed else 'disagreed'} ranks={ranks}\n"
    for conn in conns:
        conn.sendall(verdict.encode())
        conn.close()


if rank == 0:
    # Bound before any rank connects, so a refused connection below only
    # means rank 0 has not started yet.
    server = socket.create_server((addr, port))
    server.settimeout(120)
    host = threading.Thread(target=serve, args=(server,), daemon=True)
    host.start()

deadline = time.monotonic() + 120
while True:
    try:
        conn = socket.create_connection((addr, port), timeout=5)
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"rank {rank}: no rendezvous at {addr}:{port}: {e}")
        time.sleep(0.2)
conn.settimeout(120)
conn.sendall((json.dumps({"rank": rank, "world": world}) + "\n").encode())
verdict = conn.makefile().readline().strip()
print(f"rank {rank}: {verdict}", flush=True)
if rank == 0:
    # Rank 0's own answer may come first: it must not exit (and take the
    # serving thread with it) before the others have theirs.
    host.join(timeout=120)
sys.exit(0 if verdict.startswith("agreed") else 1)
