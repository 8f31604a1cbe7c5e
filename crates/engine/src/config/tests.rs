#[test]
fn every_key_reads_back_what_set_takes() {
    for m in MethodKind::ALL {
        let c = TrainConfig::for_method(m);
        for k in KEY_INFO {
            let v = c
                .get(k.key)
                .unwrap_or_else(|| panic!("no value for {}", k.key));
            let mut d = c.clone();
            d.set(k.key, &v)
                .unwrap_or_else(|e| panic!("{}={v} does not set back: {e}", k.key));
            assert_eq!(d, c, "{}={v} changed the config", k.key);
        }
    }
    let mut c = TrainConfig::default();
    assert!(c.set("nonsense", "1").unwrap_err().contains("lora.r"));
    assert!(c.get("nonsense").is_none());
    assert!(c.key_applies("lora.r"), "the default method is LoRA");
    c.set_method(MethodKind::Ia3);
    assert!(!c.key_applies("lora.r") && c.key_applies("ia3.targets") && c.key_applies("seq_len"));
}
use super::*;

#[test]
fn set_parses_and_rejects_with_the_key() {
    let mut c = TrainConfig::default();
    c.set_pair("lora.r=16").unwrap();
    c.set_pair("lora.targets=q_proj, v_proj").unwrap();
    c.set_pair("max_steps=30").unwrap();
    c.set_pair("schedule=linear").unwrap();
    assert_eq!(c.lora.r, 16);
    assert_eq!(c.lora.targets, ["q_proj", "v_proj"]);
    assert_eq!(c.max_steps, Some(30));
    let e = c.set_pair("lora.rank=4").unwrap_err();
    assert!(e.contains("unknown setting `lora.rank`"), "{e}");
    let e = c.set_pair("batch_size=0").unwrap_err();
    assert!(e.contains("`batch_size`"), "{e}");
    let e = c.set_pair("lr=fast").unwrap_err();
    assert!(e.contains("`lr`") && e.contains("fast"), "{e}");
    let e = c.set_pair("lora.targets=qkv").unwrap_err();
    assert!(e.contains("`qkv`"), "{e}");
    assert!(c.set_pair("nonsense").unwrap_err().contains("key=value"));
}

#[test]
fn toml_uses_the_same_keys() {
    let mut c = TrainConfig::default();
    c.apply_toml(
        "method = \"freeze\"\nlr = 1e-4\n[lora]\nr = 4\ntargets = [\"q_proj\", \"k_proj\"]\n[freeze]\ntrainable_layers = 1\n",
        "run.toml",
    )
    .unwrap();
    assert_eq!(c.method, MethodKind::Freeze);
    assert_eq!(c.lr, Some(1e-4));
    assert_eq!(c.lora.r, 4);
    assert_eq!(c.lora.targets, ["q_proj", "k_proj"]);
    assert_eq!(c.freeze.trainable_layers, 1);
    let e = c.apply_toml("batch = 3", "run.toml").unwrap_err();
    assert!(e.starts_with("run.toml: unknown setting `batch`"), "{e}");
    let e = c.apply_toml("lr = [", "run.toml").unwrap_err();
    assert!(e.starts_with("run.toml: not valid TOML"), "{e}");
}

#[test]
fn config_round_trips_through_json() {
    let c = TrainConfig::for_method(MethodKind::Full);
    let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(c, back);
    assert_eq!(back.lr(), 2e-5);
}
