//! The C declarations of `plugin-api/include/sft_objective.h`, field for field, for Rust code on either
//! side of that ABI: the host reads such tables, and the Python bridge (`python/bridge`) writes them for
//! objectives given as `.py` files. Plain data only; the header is the contract and says what each
//! field means.
//!
//! The Python bridge adds one entry point of its own, [`PYTHON_ENTRY_SYMBOL`]: it reads a `.py` file and
//! returns a [`SftPythonObjective`], a C table whose `create` needs to know which file it serves, so it
//! comes as [`SftPythonObjective::create_in`] with the file's handle.

use std::ffi::{c_char, c_void};

/// The symbol a C objective exports.
pub const ENTRY_SYMBOL: &str = "sft_objective_v1";
/// `SFT_OBJECTIVE_ABI_VERSION` of the header.
pub const ABI_VERSION: u32 = 1;
/// `SFT_NEEDS_ENTROPY`.
pub const NEEDS_ENTROPY: u32 = 1;
/// `SFT_NEEDS_TOP1`.
pub const NEEDS_TOP1: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub union SftValue {
    pub f: f64,
    pub i: i64,
    pub b: i32,
    pub s: *const c_char,
}

#[repr(C)]
pub struct SftParamSpec {
    pub name: *const c_char,
    pub ty: i32,
    pub has_default: i32,
    pub default_value: SftValue,
    pub choices: *const *const c_char,
    pub doc: *const c_char,
}

#[repr(C)]
pub struct SftParam {
    pub name: *const c_char,
    pub ty: i32,
    pub value: SftValue,
}

#[repr(C)]
pub struct SftBatch {
    pub logp: *const f32,
    pub mask: *const u8,
    pub n_tokens: usize,
    pub sequence_starts: *const u32,
    pub n_sequences: usize,
    pub entropy: *const f32,
    pub top1_prob: *const f32,
    pub step: u64,
    pub total_steps: u64,
}

pub type CreateFn = unsafe extern "C" fn(*const SftParam, u32, *mut c_char, usize) -> *mut c_void;
pub type ComputeFn =
    unsafe extern "C" fn(*mut c_void, *const SftBatch, *mut f32, *mut f32, *mut u8, *mut c_char, usize) -> i32;
pub type DestroyFn = unsafe extern "C" fn(*mut c_void);

#[repr(C)]
pub struct SftObjectiveV1 {
    pub abi_version: u32,
    pub needs: u32,
    pub name: *const c_char,
    pub description: *const c_char,
    pub formula: *const c_char,
    pub loss_form: i32,
    pub n_params: u32,
    pub params: *const SftParamSpec,
    pub create: Option<CreateFn>,
    pub compute: Option<ComputeFn>,
    pub destroy: Option<DestroyFn>,
}

/// The Python bridge's entry point: reads the `.py` file at `path` (NUL-terminated UTF-8) and returns
/// its table, or NULL with a one-line message in `err`.
pub const PYTHON_ENTRY_SYMBOL: &str = "sft_python_objective_v1";
pub type PythonEntryFn =
    unsafe extern "C" fn(path: *const c_char, err: *mut c_char, err_len: usize) -> *const SftPythonObjective;
/// Called once before the first entry: the folders the embedded Python adds to `sys.path` as
/// `site.addsitedir` would (NUL-terminated UTF-8, separated by `\n`), the interpreter's own `sys.path`
/// as the host found it, so imports resolve as in that `python` (a virtual environment's packages).
pub const PYTHON_SITE_DIRS_SYMBOL: &str = "sft_python_site_dirs_v1";
pub type PythonSiteDirsFn = unsafe extern "C" fn(dirs: *const c_char);
/// `create` for one file: `module` is [`SftPythonObjective::module`].
pub type CreateInFn = unsafe extern "C" fn(*mut c_void, *const SftParam, u32, *mut c_char, usize) -> *mut c_void;

/// One `.py` objective as the bridge serves it: the C table (its `create` is NULL) and a `create` that
/// is given the file's handle. Lives for the rest of the process.
#[repr(C)]
pub struct SftPythonObjective {
    pub table: SftObjectiveV1,
    pub module: *mut c_void,
    pub create_in: Option<CreateInFn>,
}
