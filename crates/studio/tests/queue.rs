//! The run queue with a real (tiny, random) model: two subscribers hear the same updates, runs
//! train one after another with their places reported, and training events arrive batched
//! without losing any.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use whetstone_studio::queue::{QueueUpdate, RunQueue};
use whetstone_studio::runs::{self, NewRun};
use whetstone_studio::store::Store;
use whetstone_studio::{DataDir, MethodKind, TrainConfig, TrainEvent};

/// GPT-2's byte-to-character table: every byte gets a printable character.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// A random two-layer Llama with a byte-level tokenizer (one token per byte).
fn tiny_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab: serde_json::Map<String, Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let (v, h, i, layers, kv) = (256usize, 32usize, 64usize, 2usize, 16usize);
    let config = json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": v,
        "hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let rand = |shape: &[usize]| {
        Tensor::randn(0f32, 0.2, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand(&[v, h]));
    t.insert("model.norm.weight".into(), ones(h));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [h, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, h]),
            ("mlp.gate_proj", [i, h]),
            ("mlp.up_proj", [i, h]),
            ("mlp.down_proj", [h, i]),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(&shape));
        }
        t.insert(format!("{p}.input_layernorm.weight"), ones(h));
        t.insert(format!("{p}.post_attention_layernorm.weight"), ones(h));
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_hear_every_run_in_order_and_batched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::at(tmp.path().join("home"));
    dir.ensure().unwrap();
    let store = Store::open(&dir.database()).await.unwrap();
    let model = tmp.path().join("model");
    tiny_model(&model);
    let data = tmp.path().join("corpus.txt");
    let line = "the quick brown fox jumps over the lazy dog\n";
    std::fs::write(&data, line.repeat(40)).unwrap();

    let steps = 40u64;
    let mut made = vec![];
    for method in [MethodKind::Lora, MethodKind::Ia3] {
        let mut cfg = TrainConfig::for_method(method);
        cfg.max_steps = Some(steps);
        cfg.batch_size = 2;
        cfg.eval_every = 0;
        cfg.sample_tokens = 0;
        let req = NewRun {
            model: model.display().to_string(),
            data: data.display().to_string(),
            config: cfg,
        };
        made.push(runs::create(&store, &dir, req).await.unwrap().id);
    }

    let queue = RunQueue::new(store.clone());
    let mut a = queue.subscribe();
    let mut b = queue.subscribe();
    let started = Instant::now();
    assert_eq!(queue.submit(&made[0], false).await.unwrap(), 0);
    assert_eq!(queue.submit(&made[1], false).await.unwrap(), 1);
    assert!(queue.submit(&made[1], false).await.is_err(), "queued twice");

    let mut heard: [Vec<Value>; 2] = [vec![], vec![]];
    for (k, rx) in [&mut a, &mut b].into_iter().enumerate() {
        let mut ended = 0;
        while ended < 2 {
            let u = tokio::time::timeout(Duration::from_secs(300), rx.recv())
                .await
                .expect("the queue went quiet")
                .expect("the channel closed");
            ended += usize::from(matches!(u, QueueUpdate::Ended { .. }));
            heard[k].push(serde_json::to_value(&u).unwrap());
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(heard[0], heard[1], "two subscribers heard different things");

    // places, then run 1's events and end, then run 2's: one training at a time
    let kinds: Vec<(String, String)> = heard[0]
        .iter()
        .map(|u| {
            (
                u["update"].as_str().unwrap().to_string(),
                u["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let first_of_2 = kinds
        .iter()
        .position(|(k, r)| k == "events" && r == &made[1])
        .unwrap();
    let end_of_1 = kinds
        .iter()
        .position(|(k, r)| k == "ended" && r == &made[0])
        .unwrap();
    assert!(end_of_1 < first_of_2, "{kinds:?}");
    assert_eq!(heard[0][0]["position"], 0);
    assert_eq!(heard[0][1]["position"], 1);

    for run in &made {
        let batches: Vec<&Value> = heard[0]
            .iter()
            .filter(|u| u["update"] == "events" && u["run_id"] == run.as_str())
            .collect();
        let events: Vec<TrainEvent> = batches
            .iter()
            .flat_map(|u| serde_json::from_value::<Vec<TrainEvent>>(u["events"].clone()).unwrap())
            .collect();
        let step_numbers: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Step { step, .. } => Some(*step),
                _ => None,
            })
            .collect();
        assert_eq!(
            step_numbers,
            (1..=steps).collect::<Vec<_>>(),
            "a step was lost"
        );
        // at most one batch per 50 ms (plus the final flush)
        let limit = (elapsed.as_millis() / 50) as usize + 2;
        assert!(
            batches.len() <= limit,
            "{} batches in {elapsed:?}",
            batches.len()
        );
        // (No separate "events were batched" check: how many events share a batch depends on
        // how fast this machine trains, and whenever they came faster than one per 50 ms the
        // bound above already forces batches.len() < events.len().)
        let ended = heard[0]
            .iter()
            .find(|u| u["update"] == "ended" && u["run_id"] == run.as_str())
            .unwrap();
        assert_eq!(ended["status"], "completed", "{ended}");
        // what a run screen loads afterwards: the same steps as columns, timed, in order
        let m = whetstone_studio::history::metrics(&store, run)
            .await
            .unwrap();
        let want: Vec<f64> = (1..=steps).map(|s| s as f64).collect();
        assert_eq!(m.train.step, want);
        for col in [&m.train.loss, &m.train.lr, &m.train.tokens, &m.train.time_s] {
            assert_eq!(col.len(), want.len());
            assert!(col.iter().all(Option::is_some), "a column has gaps");
        }
        let times: Vec<f64> = m.train.time_s.iter().flatten().copied().collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert!(times[0] > 0.0 && times[times.len() - 1] <= elapsed.as_secs_f64());
        assert_eq!(
            m.eval.step.first(),
            Some(&0.0),
            "the curve starts before training"
        );
        assert_eq!(m.eval.tokens.first(), Some(&Some(0.0)));
        assert_eq!(m.eval.step.len(), m.eval.time_s.len());
    }
    assert!(queue.positions().iter().all(|(_, ids)| ids.is_empty()));
}
