//! The bridge links the libpython of the interpreter PyO3 found at build time; record its folder as
//! the library's run path so the host finds it without LD_LIBRARY_PATH.
fn main() {
    let config = pyo3_build_config::get();
    if let Some(lib_dir) = &config.lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
}
