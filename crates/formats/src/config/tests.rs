use super::*;
use serde_json::json;

fn llama() -> Value {
    json!({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "eos_token_id": [1, 2], "hidden_act": "silu"
    })
}

#[test]
fn reads_a_llama_config_with_defaults() {
    let c = ModelConfig::from_hf_value(&llama(), Path::new("c.json")).unwrap();
    assert_eq!(c.family, Family::Llama);
    assert_eq!(c.head_dim, 16);
    assert_eq!(c.eos_token_ids, vec![1, 2]);
    assert!(!c.qkv_bias);
    // embed 6400 + per layer (64*64*2 + 64*32*2 + 3*64*128 + 128) + final norm 64
    assert_eq!(
        c.parameter_count(),
        6400 + 2 * (8192 + 4096 + 24576 + 128) + 64
    );
}

#[test]
fn qwen2_has_qkv_bias_and_llama3_scaling_parses() {
    let mut v = llama();
    v["model_type"] = json!("qwen2");
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let c = ModelConfig::from_hf_value(&v, Path::new("c.json")).unwrap();
    assert!(c.qkv_bias && !c.o_bias);
    assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })));
}

#[test]
fn both_config_generations_give_the_same_rope() {
    // transformers 4.x: top-level rope_theta / rope_scaling
    let mut old = llama();
    old["rope_theta"] = json!(500000.0);
    old["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192});
    // transformers 5.x: everything under rope_parameters, theta included
    let mut new = llama();
    new.as_object_mut().unwrap().remove("rope_theta");
    new["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0,
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192});
    let p = Path::new("c.json");
    let (a, b) = (
        ModelConfig::from_hf_value(&old, p).unwrap(),
        ModelConfig::from_hf_value(&new, p).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(b.rope_theta, 500000.0);
    // a Qwen2 folder saved by transformers 5: theta 1e6 must not fall back to 10,000
    let mut q = llama();
    q["model_type"] = json!("qwen2");
    q.as_object_mut().unwrap().remove("rope_theta");
    q["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1000000.0});
    q["dtype"] = json!("bfloat16");
    let c = ModelConfig::from_hf_value(&q, p).unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling), (1e6, None));
    // both forms present and equal is fine; disagreeing is refused by name
    q["rope_theta"] = json!(1000000.0);
    assert!(ModelConfig::from_hf_value(&q, p).is_ok());
    q["rope_theta"] = json!(10000.0);
    let e = ModelConfig::from_hf_value(&q, p).unwrap_err().to_string();
    assert!(
        e.contains("`rope_parameters.rope_theta`") && e.contains("10000"),
        "{e}"
    );
}

#[test]
fn keys_that_change_the_math_are_refused_by_name() {
    let cases = [
        (
            "partial_rotary_factor",
            json!(0.5),
            "`partial_rotary_factor`: 0.5",
        ),
        (
            "attn_logit_softcapping",
            json!(50.0),
            "`attn_logit_softcapping`: 50",
        ),
        (
            "final_logit_softcapping",
            json!(30.0),
            "`final_logit_softcapping`: 30",
        ),
        (
            "layer_types",
            json!(["full_attention", "sliding_attention"]),
            "`layer_types[1]`: \"sliding_attention\" is not what llama computes",
        ),
        (
            "layer_types",
            json!(["full_attention", "chunked_attention"]),
            "`layer_types[1]`: \"chunked_attention\" is not supported",
        ),
        (
            "no_rope_layers",
            json!([1, 0]),
            "`no_rope_layers`: [1,0]: llama rotates every layer",
        ),
        (
            "rope_parameters",
            json!({"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}),
            "`rope_parameters.rope_type`: \"yarn\"",
        ),
        (
            "rope_parameters",
            json!({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}),
            "`rope_parameters.partial_rotary_factor`: 0.25",
        ),
        (
            "rope_parameters",
            json!({"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
            "one rope per layer type (full_attention, sliding_attention)",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "dynamic", "factor": 2.0}),
            "`rope_scaling.rope_type`: \"dynamic\"",
        ),
    ];
    for (field, value, want) in cases {
        let mut v = llama();
        v[field] = value;
        let e = ModelConfig::from_hf_value(&v, Path::new("m/config.json")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("m/config.json: field ") && s.contains(want),
            "{s}"
        );
    }
    // the neutral values of the same keys are accepted
    let mut v = llama();
    v["partial_rotary_factor"] = json!(1.0);
    v["final_logit_softcapping"] = json!(null);
    v["use_sliding_window"] = json!(false);
    v["layer_types"] = json!(["full_attention", "full_attention"]);
    assert!(ModelConfig::from_hf_value(&v, Path::new("c.json")).is_ok());
}

#[test]
fn sliding_windows_and_rope_layers_follow_each_family_class() {
    let p = Path::new("c.json");
    let read = |edit: &dyn Fn(&mut Value)| {
        let mut v = llama();
        v["num_hidden_layers"] = json!(4);
        edit(&mut v);
        ModelConfig::from_hf_value(&v, p)
    };
    // Mistral slides everywhere; without the key its class default (4096) holds
    let c = read(&|v| v["model_type"] = json!("mistral")).unwrap();
    assert_eq!(c.sliding_window, Some(4096));
    assert!((0..4).all(|l| c.layer_window(l) == Some(4096)));
    let c = read(&|v| {
        v["model_type"] = json!("mistral");
        v["sliding_window"] = json!(null);
    })
    .unwrap();
    assert!((0..4).all(|l| c.layer_window(l).is_none()));
    // Qwen2/Qwen3: only with use_sliding_window, from max_window_layers on
    let c = read(&|v| {
        v["model_type"] = json!("qwen3");
        v["sliding_window"] = json!(8);
        v["max_window_layers"] = json!(2);
    })
    .unwrap();
    assert!(c.sliding_layers.is_empty() && c.qk_norm);
    let c = read(&|v| {
        v["model_type"] = json!("qwen2");
        v["use_sliding_window"] = json!(true);
        v["sliding_window"] = json!(8);
        v["max_window_layers"] = json!(2);
    })
    .unwrap();
    assert_eq!(c.sliding_layers, [false, false, true, true]);
    // an explicit layer_types wins, but must agree with use_sliding_window
    let c = read(&|v| {
        v["model_type"] = json!("qwen2");
        v["use_sliding_window"] = json!(true);
        v["sliding_window"] = json!(8);
        v["layer_types"] = json!([
            "sliding_attention",
            "full_attention",
            "full_attention",
            "full_attention"
        ]);
    })
    .unwrap();
    assert_eq!(c.layer_window(0), Some(8));
    let e = read(&|v| {
        v["model_type"] = json!("qwen2");
        v["layer_types"] = json!([
            "sliding_attention",
            "full_attention",
            "full_attention",
            "full_attention"
        ]);
    })
    .unwrap_err();
    assert!(e.to_string().contains("`layer_types[0]`"), "{e}");
    // SmolLM3: every fourth layer without rope unless listed; ties by default
    let c = read(&|v| {
        v["model_type"] = json!("smollm3");
        v.as_object_mut().unwrap().remove("tie_word_embeddings");
    })
    .unwrap();
    assert_eq!(c.rope_layers, [true, true, true, false]);
    assert!(c.tie_word_embeddings);
    let c = read(&|v| {
        v["model_type"] = json!("smollm3");
        v["no_rope_layers"] = json!([0, 1, 1, 1]);
        v["use_sliding_window"] = json!(true);
        v["sliding_window"] = json!(3);
    })
    .unwrap();
    assert_eq!(c.sliding_layers, [true, false, false, false]);
    let e = read(&|v| {
        v["model_type"] = json!("smollm3");
        v["no_rope_layers"] = json!([1, 2, 1, 1]);
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("`no_rope_layers[1]`: expected 0 or 1, got 2"),
        "{e}"
    );
    // per-layer lists of the wrong length, and layer counts no model has, are refused
    // before anything is allocated for them (found by whetstone-fuzz: an index panic and
    // a 4 GiB allocation)
    for (edit, want) in [
        (
            json!({"layer_types": []}),
            "`layer_types`: has 0 entries, num_hidden_layers = 4",
        ),
        (
            json!({"model_type": "smollm3", "no_rope_layers": [1, 1]}),
            "`no_rope_layers`: has 2 entries",
        ),
        (
            json!({"num_hidden_layers": 4294967295u64}),
            "`num_hidden_layers`: 4294967295 is more than 4096 layers",
        ),
    ] {
        let e = read(&|v| {
            for (k, x) in edit.as_object().unwrap() {
                v[k] = x.clone();
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    // Qwen3 without head_dim uses its class default, not hidden / heads
    let c = read(&|v| {
        v["model_type"] = json!("qwen3");
        v.as_object_mut().unwrap().remove("head_dim");
    })
    .unwrap();
    assert_eq!(c.head_dim, 128);
    // the HF config written for a merged export reads back as the same model
    for c in [
        read(&|v| {
            v["model_type"] = json!("smollm3");
            v["use_sliding_window"] = json!(true);
            v["sliding_window"] = json!(3);
        }),
        read(&|v| {
            v["model_type"] = json!("qwen3");
            v["attention_bias"] = json!(true);
            v["use_sliding_window"] = json!(true);
            v["sliding_window"] = json!(5);
            v["max_window_layers"] = json!(1);
        }),
        read(&|v| {
            v["model_type"] = json!("mistral");
            v["sliding_window"] = json!(6);
        }),
    ] {
        let c = c.unwrap();
        let json = c
            .to_hf_json("float32", (c.qkv_bias, c.o_bias, c.mlp_bias))
            .unwrap();
        assert_eq!(ModelConfig::from_hf_value(&json, p).unwrap(), c);
    }
}

#[test]
fn bad_fields_name_the_file_and_field() {
    let cases = [
        (
            "hidden_size",
            json!("big"),
            "field `hidden_size`: expected a non-negative integer",
        ),
        (
            "num_key_value_heads",
            json!(3),
            "field `num_key_value_heads`: 3 does not divide",
        ),
        ("rms_norm_eps", json!(-1.0), "field `rms_norm_eps`"),
        (
            "model_type",
            json!("gpt_neox"),
            "\"gpt_neox\" is not supported",
        ),
        ("hidden_act", json!("gelu"), "field `hidden_act`"),
    ];
    for (field, value, want) in cases {
        let mut v = llama();
        v[field] = value;
        let e = ModelConfig::from_hf_value(&v, Path::new("m/config.json")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("m/config.json: ") && s.contains(want), "{s}");
    }
    let mut v = llama();
    v.as_object_mut().unwrap().remove("vocab_size");
    let e = ModelConfig::from_hf_value(&v, Path::new("c.json")).unwrap_err();
    assert_eq!(e.to_string(), "c.json: field `vocab_size`: missing");
}
