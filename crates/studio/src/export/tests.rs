use super::*;
use to_ollama::ollama_template;

#[test]
fn formats_refuse_methods_they_cannot_hold() {
    assert!(check_format(MethodKind::Lora, ExportFormat::Gguf).is_ok());
    assert!(check_format(MethodKind::Dora, ExportFormat::Gguf).is_ok()); // merged model
    let e = check_format(MethodKind::Full, ExportFormat::Peft).unwrap_err();
    assert!(e.contains("--format merged"), "{e}");
    let e = check_format(MethodKind::PromptTuning, ExportFormat::Merged).unwrap_err();
    assert!(e.contains("--format peft"), "{e}");
    let e = check_format(MethodKind::Adapter, ExportFormat::Ollama).unwrap_err();
    assert!(e.contains("Houlsby"), "{e}");
    for f in ExportFormat::ALL {
        assert_eq!(f.as_str().parse::<ExportFormat>().unwrap(), f);
    }
    assert!("zip".parse::<ExportFormat>().unwrap_err().contains("peft"));
}

#[test]
fn a_failed_export_leaves_nothing_and_a_stale_stage_is_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    // a stage from a process that no longer exists
    let stale = tmp
        .path()
        .join(format!("{}999999999", staging_prefix(&dest)));
    std::fs::create_dir(&stale).unwrap();
    let e = write_export(&dest, json!({}), |stage| {
        std::fs::write(stage.join("half.bin"), b"partial").unwrap();
        Err(user("disk full"))
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "disk full");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // a complete export replaces an earlier one and lists its files
    for round in 0..2 {
        let manifest = json!({"whetstone_version": "x", "run_id": "run-1", "round": round});
        let files = write_export(&dest, manifest, |stage| {
            std::fs::write(stage.join("a.txt"), format!("{round}")).map_err(internal)
        })
        .unwrap();
        assert_eq!(files.len(), 1);
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(dest.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["round"], round);
        assert_eq!(m["files"][0]["name"], "a.txt");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    // a folder that is not an export of ours is never replaced
    let mine = tmp.path().join("documents");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("thesis.txt"), b"keep me").unwrap();
    let e = write_export(&mine, json!({}), |_| Ok(())).unwrap_err();
    assert!(
        e.to_string().contains("not an earlier Whetstone export"),
        "{e}"
    );
    assert_eq!(std::fs::read(mine.join("thesis.txt")).unwrap(), b"keep me");
}

#[test]
fn chatml_templates_become_ollama_templates() {
    let (t, stops) = ollama_template("{% for m in messages %}<|im_start|>{{ m.role }}").unwrap();
    assert!(t.contains("{{ .Prompt }}") && t.contains("<|im_start|>assistant"));
    assert!(stops.contains(&"<|im_end|>"));
    assert!(ollama_template("{{ bos_token }}{{ messages }}").is_none());
}
