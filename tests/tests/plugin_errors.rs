//! Every way a plugin can be refused or fail, through the real binary on real files: one `error:` line
//! and exit code 2.

use integration_tests::{assert_error, host, plugin_path};

#[test]
fn missing_file() {
    let out = host(&["plugins", "curve", "/nonexistent/libnope.so"]);
    assert_error(&out, 2, &["plugin file not found", "/nonexistent/libnope.so"]);
    let out = host(&["plugins", "curve", "no_such_objective"]);
    assert_error(&out, 2, &["no plugin named `no_such_objective`", "search path"]);
}

#[test]
fn a_file_that_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "this is text, not ELF").unwrap();
    let out = host(&["plugins", "curve", fake.to_str().unwrap()]);
    assert_error(&out, 2, &["libfake.so", "is not a loadable library"]);
}

#[test]
fn a_library_that_is_not_a_plugin() {
    // A real shared library without our root module: the host's own test build of a plugin-free cdylib
    // is not at hand, but every Linux system has libm.
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libm present");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libm_copy.so");
    std::fs::copy(libm, &copy).unwrap();
    let out = host(&["plugins", "curve", copy.to_str().unwrap()]);
    assert_error(&out, 2, &["libm_copy.so", "is not a plugin", "root module"]);
}

#[test]
fn wrong_kind() {
    let out = host(&["plugins", "curve", "proportional"]);
    assert_error(&out, 2, &["is a mixer plugin (`proportional`)", "expected an objective plugin"]);
}

#[test]
fn unknown_or_ill_typed_parameter() {
    let out = host(&["plugins", "curve", "general_family", "--param", "alpah=2"]);
    assert_error(&out, 2, &["unknown parameter `alpah`", "alpha"]);
    let out = host(&["plugins", "curve", "general_family", "--param", "alpha=big"]);
    assert_error(&out, 2, &["parameter `alpha` must be a float", "string"]);
    let out = host(&["plugins", "curve", "neg_p_threshold", "--param", "q=2"]);
    assert_error(&out, 2, &["refused its parameters", "`q` must be in [0, 1]"]);
    let out = host(&["plugins", "curve", "neg_p_threshold", "--param", "q=0.5", "--param", "side=middle"]);
    assert_error(&out, 2, &["`side` must be one of top|bottom"]);
}

#[test]
fn panic_inside_a_plugin_call_is_an_error_not_an_abort() {
    let out = host(&["plugins", "curve", "test_faulty_objective", "--param", "fault=panic_compute"]);
    assert_error(
        &out,
        2,
        &["objective `test_faulty_objective` failed", "plugin panicked in compute", "injected panic"],
    );
    let out = host(&["plugins", "curve", "test_faulty_objective", "--param", "fault=panic_create"]);
    assert_error(&out, 2, &["refused its parameters", "plugin panicked in create"]);
}

#[test]
fn non_finite_outputs_are_refused_naming_the_token() {
    let out = host(&["plugins", "curve", "test_faulty_objective", "--param", "fault=nan", "--points", "5"]);
    // Grid 1e-6, 0.25, 0.5, 0.75, 1: the first NaN is token 0.
    assert_error(&out, 2, &["non-finite value at token 0", "test_faulty_objective"]);
}

#[test]
fn plugins_found_by_path_with_and_without_prefix_and_suffix() {
    let path = plugin_path("neg_p");
    let dir = path.parent().unwrap().to_str().unwrap().to_string();
    for name in ["neg_p", "libneg_p", "libneg_p.so"] {
        let out = host(&["--plugin-dir", &dir, "plugins", "inspect", name]);
        assert!(out.status.success(), "{name}: {}", integration_tests::stderr(&out));
    }
    let out = host(&["plugins", "inspect", path.to_str().unwrap()]);
    assert!(out.status.success());
}
