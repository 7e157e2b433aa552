"""A parameter-server job's replica without TensorFlow: prints TF_CONFIG,
listens on its own host:port, and (the chief) connects to every peer named
in TF_CONFIG, then exits, which ends the job."""
import json
import os
import socket
import sys
import time

config = json.loads(os.environ["TF_CONFIG"])
print("TF_CONFIG=" + json.dumps(config, sort_keys=True), flush=True)
task = config["task"]
me = config["cluster"][task["type"]][task["index"]]
host, port = me.rsplit(":", 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, int(port)))
server.listen(16)
if task["type"] != "chief":
    while True:
        conn, _ = server.accept()
        conn.close()
peers = [a for kind, addrs in config["cluster"].items() for a in addrs if kind != "chief"]
deadline = time.time() + 60
for peer in peers:
    peer_host, peer_port = peer.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((peer_host, int(peer_port)), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit(f"peer {peer} never listened")
            time.sleep(0.05)
print(f"chief saw {len(peers)} peers", flush=True)
