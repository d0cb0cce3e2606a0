//! The command line as an operator meets it: the real binary, its output and exit codes.

use std::process::Command;

fn st2_matrix(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_st2-matrix"))
        .args(args)
        .output()
        .expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn example_config_in(dir: &std::path::Path) -> String {
    let path = dir.join("config.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        &path,
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn generate_registration_then_check_config_succeed_and_overwrite_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config_in(dir.path());
    let (code, stdout, _) = st2_matrix(&["generate-registration", "--config", &config]);
    assert_eq!(code, 0);
    assert!(stdout.contains("app_service_config_files"), "{stdout}");
    assert!(
        dir.path().join("registration.yaml").exists(),
        "written next to the config by default"
    );
    let (code, stdout, stderr) = st2_matrix(&["check-config", "--config", &config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid"));
    let (code, _, stderr) = st2_matrix(&["generate-registration", "--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        st2_matrix(&["generate-registration", "--config", &config, "--force"]).0,
        0
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[homeserver]\nurl = \"ftp://x\"\nserver_name = \"example.org\"\n[appservice]\n",
    )
    .unwrap();
    let (code, _, stderr) = st2_matrix(&["check-config", "--config", &path.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("homeserver.url") && stderr.contains("config.toml"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_a_missing_registration() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config_in(dir.path());
    let (code, _, stderr) = st2_matrix(&["check-config", "--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains("registration.yaml"), "{stderr}");
}

#[test]
fn parse_alias_prints_parameters_or_says_why_not() {
    let (code, stdout, _) = st2_matrix(&[
        "parse-alias",
        "--format",
        "run {{cmd}} on {{hosts=localhost}}",
        "run date on web1",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!({"cmd": "date", "hosts": "web1"})
    );
    let (code, _, stderr) = st2_matrix(&["parse-alias", "--format", "run {{cmd}}", "walk"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("doesn't match"), "{stderr}");
    let (code, _, stderr) = st2_matrix(&["parse-alias", "--format", "run {{my-param}}", "run x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("my-param"), "{stderr}");
    let (code, stdout, _) = st2_matrix(&[
        "parse-alias",
        "--multiple",
        "--format",
        "(?:\\b|^)fix (?P<key>[A-Z]+-[0-9]+)(?:\\b|$)",
        "fix AB-1 and fix CD-2",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!([{"key": "AB-1"}, {"key": "CD-2"}])
    );
}
