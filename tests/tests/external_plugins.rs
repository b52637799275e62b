//! The host is not recompiled to use a new objective: a plugin crate outside the workspace, depending
//! on plugin-api only, is built after the host and loaded by the same binary. Plugins built against an
//! incompatible plugin-api (another version; a changed layout) are refused with a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{assert_error, host, host_path, stdout, target_dir, workspace_root};

/// The first ```rust block of README's "Writing an objective plugin" section: the documented example
/// is the plugin this test builds.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Writing an objective plugin").expect("README section")..];
    let start = section.find("```rust").expect("rust block") + "```rust".len();
    let end = start + section[start..].find("```").expect("closing fence");
    // The block is indented inside a list item.
    section[start..end].lines().map(|l| l.strip_prefix("   ").unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of plugin-api with `version` and source edits `(file, from, to)`, as another team might have.
fn altered_plugin_api(root: &Path, dir: &str, version: &str, edits: &[(&str, &str, &str)]) -> PathBuf {
    let copy = root.join(dir);
    copy_dir(&workspace_root().join("plugin-api"), &copy);
    let manifest = format!(
        "[package]\nname = \"plugin-api\"\nversion = \"{version}\"\nedition = \"2021\"\n\n[dependencies]\nabi_stable = \"0.11.3\"\n"
    );
    std::fs::write(copy.join("Cargo.toml"), manifest).unwrap();
    for &(file, from, to) in edits {
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} not in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    copy
}

fn plugin_crate(root: &Path, name: &str, plugin_api: &Path, source: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[workspace]\n\n[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nplugin-api = {{ path = {:?} }}\n",
        plugin_api.display().to_string()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
}

#[test]
fn a_plugin_built_outside_the_workspace_loads_in_the_same_host_and_bad_abis_are_refused() {
    let host_binary = host_path();
    let host_before = std::fs::metadata(&host_binary).unwrap().modified().unwrap();

    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let source = readme_example();
    plugin_crate(root, "sqrt_p", &workspace_root().join("plugin-api"), &source);
    let v2 = altered_plugin_api(root, "plugin-api-v2", "0.2.0", &[]);
    plugin_crate(root, "sqrt_p_v2", &v2, &source);
    // Same compatible version, but an enum of the root module gained a variant: only the layout check
    // can tell.
    let edit = ("src/objective.rs", "    NotApplicable,\n}", "    NotApplicable,\n    Curvature,\n}");
    let layout = altered_plugin_api(root, "plugin-api-layout", "0.1.1", &[edit]);
    plugin_crate(root, "sqrt_p_layout", &layout, &source);
    // The plugin-api before the root module gained its optional `benchmark` field (appended after the
    // prefix): plugins built against it must keep loading in today's host.
    let field = "    /// An evaluator may carry its benchmark: examples for a split, size and seed. Added after the
    /// prefix, so a plugin built before this field existed still loads (the host sees `None`).
    #[sabi(missing_field(option))]
    pub benchmark:
        Option<extern \"C\" fn(split: RStr<'_>, size: u64, seed: u64) -> RResult<RVec<BenchmarkExample>, RString>>,
";
    let older = altered_plugin_api(
        root,
        "plugin-api-older",
        "0.1.0",
        &[("src/lib.rs", field, ""), ("src/export.rs", "                benchmark: $benchmark,\n", "")],
    );
    plugin_crate(root, "sqrt_p_older", &older, &source);
    // Each plugin is its own workspace (two plugin-api packages cannot share one), with dependency
    // versions pinned to this workspace's lock; they share one target folder so abi_stable builds once.
    let target = target_dir().join("external-plugin-builds");
    for name in ["sqrt_p", "sqrt_p_v2", "sqrt_p_layout", "sqrt_p_older"] {
        std::fs::copy(workspace_root().join("Cargo.lock"), root.join(name).join("Cargo.lock")).unwrap();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet"])
            .current_dir(root.join(name))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "building the external plugin {name} failed");
    }
    let lib = |name: &str| target.join("debug").join(format!("lib{name}.so")).to_str().unwrap().to_string();

    // The new objective: checked, tabulated and plotted by the untouched host.
    let out = host(&["plugins", "check", &lib("sqrt_p")]);
    assert!(out.status.success(), "{}", integration_tests::stderr(&out));
    let out = host(&["plugins", "curve", &lib("sqrt_p"), "--points", "41"]);
    assert!(out.status.success());
    for line in stdout(&out).lines().skip(1) {
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let p = v[0];
        assert!((v[1] - 2.0 * (1.0 - p.sqrt())).abs() <= 1e-5 * v[1].abs() + 1e-7, "{line}");
        assert!((v[2] - p.sqrt()).abs() <= 1e-5 * v[2].abs() + 1e-7, "{line}");
    }
    assert_eq!(std::fs::metadata(&host_binary).unwrap().modified().unwrap(), host_before, "host was rebuilt");

    // Built before the root module grew a field: loads, checks and computes as before.
    let out = host(&["plugins", "check", &lib("sqrt_p_older")]);
    assert!(out.status.success(), "older plugin refused: {}", integration_tests::stderr(&out));

    let out = host(&["plugins", "curve", &lib("sqrt_p_v2")]);
    assert_error(&out, 2, &["libsqrt_p_v2.so", "built against plugin-api 0.2.0", "incompatible", "0.1.0"]);
    let out = host(&["plugins", "curve", &lib("sqrt_p_layout")]);
    assert_error(&out, 2, &["libsqrt_p_layout.so", "incompatible plugin ABI"]);
}
