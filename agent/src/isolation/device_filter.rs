//! GPU device confinement on cgroup v2: the eBPF device program (the v2
//! counterpart of the v1 devices controller, as runc builds it) that denies
//! `c 195:N` for every GPU the task was not given and allows everything
//! else. Owns the raw instructions and the `bpf(2)` load and attach; it
//! does not create, fill or remove cgroups (that is `cgroup_v2.rs`).
//!
//! No toolchain and no crate: the program is a dozen hand-encoded
//! instructions, and `bpf_attr` is laid out by hand for the two commands
//! used. The program fd is closed after the attach; the attachment keeps
//! the program alive and removing the cgroup releases it, so `cleanup`
//! needs nothing from this module.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::NVIDIA_MAJOR;

/// `BPF_DEVCG_DEV_CHAR`: the device type (low 16 bits of `access_type`) of
/// character devices.
const DEV_CHAR: i32 = 2;

// bpf(2) commands, program and attach types (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs (the parent's, another manager's) keep running beside
/// ours; every one of them must allow an access.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// Device programs call no GPL-only helper, so the project's own licence.
const LICENSE: &str = "Apache-2.0";
/// Size of the verifier log asked for when a load fails.
const LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high one.
    pub regs: u8,
    /// Jump offset (from the next instruction) or memory offset.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

// Opcode parts (class | size/op | mode/source).
const BPF_LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const BPF_ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const BPF_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const BPF_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The device program denying `c 195:m` for each `m` in `denied_minors`
/// and allowing every other access. R1 points at `struct
/// bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`.
///
/// ```text
///   r2 = ctx->access_type & 0xffff;  if r2 != CHAR goto allow
///   r3 = ctx->major;                 if r3 != 195  goto allow
///   r4 = ctx->minor;                 if r4 == m    goto deny   (each m)
/// allow: r0 = 1; exit
/// deny:  r0 = 0; exit
/// ```
pub fn program(denied_minors: &[u32]) -> Vec<Insn> {
    let n = denied_minors.len();
    let allow = 6 + n;
    let deny = allow + 2;
    // Jump offsets count from the instruction after the jump.
    let to = |target: usize, pc: usize| (target - pc - 1) as i16;
    let mut p = vec![
        insn(BPF_LDX_MEM_W, R2, R1, 0, 0),
        insn(BPF_ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(BPF_JNE_K, R2, 0, to(allow, 2), DEV_CHAR),
        insn(BPF_LDX_MEM_W, R3, R1, 4, 0),
        insn(BPF_JNE_K, R3, 0, to(allow, 4), NVIDIA_MAJOR as i32),
        insn(BPF_LDX_MEM_W, R4, R1, 8, 0),
    ];
    for (i, minor) in denied_minors.iter().enumerate() {
        // The minor is a u32 in the context and the 32-bit immediate is
        // sign-extended by JEQ, so minors above i32::MAX cannot match;
        // device minors are 20 bits, far below that.
        p.push(insn(BPF_JEQ_K, R4, 0, to(deny, 6 + i), *minor as i32));
    }
    p.extend([
        insn(BPF_MOV64_K, R0, 0, 0, 1),
        insn(BPF_EXIT, 0, 0, 0, 0),
        insn(BPF_MOV64_K, R0, 0, 0, 0),
        insn(BPF_EXIT, 0, 0, 0, 0),
    ]);
    debug_assert_eq!(p.len(), deny + 2);
    p
}

/// Why the device program could not be put on a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    /// The cgroup directory could not be opened.
    #[error("cgroup '{}': cannot open it to attach the GPU device program: {source}", cgroup.display())]
    Open {
        /// The cgroup v2 directory.
        cgroup: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// BPF_PROG_LOAD refused the program.
    #[error("cgroup '{}': cannot load the GPU device program (BPF_PROG_LOAD): {source}; the agent needs CAP_SYS_ADMIN (or CAP_BPF) and a kernel with CONFIG_CGROUP_BPF{}", cgroup.display(), verifier_suffix(verifier_log))]
    Load {
        /// The cgroup v2 directory.
        cgroup: PathBuf,
        /// The errno.
        source: io::Error,
        /// The verifier's log, when it said anything.
        verifier_log: String,
    },
    /// BPF_PROG_ATTACH refused to attach it.
    #[error("cgroup '{}': cannot attach the GPU device program (BPF_PROG_ATTACH, BPF_CGROUP_DEVICE): {source}; is it a cgroup v2 directory, and does the agent have CAP_SYS_ADMIN?", cgroup.display())]
    Attach {
        /// The cgroup v2 directory.
        cgroup: PathBuf,
        /// The errno.
        source: io::Error,
    },
}

fn verifier_suffix(log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier said: {log}")
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`; the
/// kernel zero-fills the fields after it.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of
    // `union bpf_attr` for `cmd` and its size is passed with it; any
    // pointers inside it outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(prog: &[Insn], log: Option<&mut Vec<u8>>) -> io::Result<OwnedFd> {
    let license = CString::new(LICENSE).expect("no NUL in the licence");
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"mezz_gpudv");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    if let Some(buf) = log {
        buf.clear();
        buf.resize(LOG_SIZE, 0);
        attr.log_level = 1;
        attr.log_size = LOG_SIZE as u32;
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program denying `denied_minors` (major [`NVIDIA_MAJOR`]) and
/// attaches it to the cgroup v2 directory `cgroup` (BPF_CGROUP_DEVICE,
/// BPF_F_ALLOW_MULTI). Processes in the cgroup and its descendants are
/// confined from then on; the attachment lives until the cgroup is
/// removed.
pub fn attach(cgroup: &Path, denied_minors: &[u32]) -> Result<(), DeviceFilterError> {
    let prog = program(denied_minors);
    let prog_fd = load(&prog, None).map_err(|source| {
        // Ask again with the verifier's log so the error can say why.
        let mut log = Vec::new();
        let _ = load(&prog, Some(&mut log));
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        DeviceFilterError::Load {
            cgroup: cgroup.to_path_buf(),
            source,
            verifier_log: String::from_utf8_lossy(&log[..end]).into_owned(),
        }
    })?;
    let dir = open_dir(cgroup).map_err(|source| DeviceFilterError::Open {
        cgroup: cgroup.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| DeviceFilterError::Attach {
        cgroup: cgroup.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` the way the kernel would on one access: a small
    /// interpreter of exactly the instructions `program` emits, so the
    /// rule is checked without root.
    fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            let jump = |taken: bool| if taken { i.off as isize } else { 0 };
            let mut next = pc as isize + 1;
            match i.code {
                BPF_LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                BPF_ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                BPF_MOV64_K => r[dst] = i.imm as i64 as u64,
                BPF_JEQ_K => next += jump(r[dst] == i.imm as i64 as u64),
                BPF_JNE_K => next += jump(r[dst] != i.imm as i64 as u64),
                BPF_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc = usize::try_from(next).expect("jump before the start");
            assert!(pc < prog.len(), "jump past the end");
        }
    }

    const BLOCK: u32 = 1;
    const CHAR: u32 = DEV_CHAR as u32;
    const RWM: u32 = 7;

    #[test]
    fn denies_only_the_gpus_not_given() {
        let prog = program(&[1, 3]);
        for (minor, want) in [(0, 1), (1, 0), (2, 1), (3, 0), (255, 1)] {
            assert_eq!(
                run(&prog, CHAR, RWM, NVIDIA_MAJOR, minor),
                want,
                "c 195:{minor}"
            );
        }
        // Same minors on another major, or a block device: allowed.
        assert_eq!(run(&prog, CHAR, RWM, 1, 3), 1);
        assert_eq!(run(&prog, BLOCK, RWM, NVIDIA_MAJOR, 1), 1);
        // The access bits (read 2, write 4, mknod 1) do not change the rule.
        for access in [1, 2, 4] {
            assert_eq!(run(&prog, CHAR, access, NVIDIA_MAJOR, 1), 0);
        }
    }

    #[test]
    fn no_denied_gpu_allows_all() {
        let prog = program(&[]);
        assert_eq!(prog.len(), 10);
        assert_eq!(run(&prog, CHAR, RWM, NVIDIA_MAJOR, 0), 1);
    }

    #[test]
    fn instruction_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<ProgAttachAttr>(), 20);
        let i = insn(BPF_LDX_MEM_W, R4, R1, 8, 0);
        assert_eq!(i.regs, 0x14);
    }
}
