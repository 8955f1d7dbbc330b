"""PULSE-7B / LLaVA-1.6 for ECGBench: the model definition and the lmms-eval adapters.

Modules (import what you need; this package import stays light, no torch):
    configuration   PulseConfig (original LLaVA config.json switches, validated)
    conversation    llava_v1 template, per-chunk tokenisation, training labels
    image_processing anyres preprocessing (bit-compatible with LLaVA's PIL path), token counts
    modeling        PulseLlavaForCausalLM (CLIP + mlp2x_gelu + Llama from transformers parts)
    checkpoint      the original format on disk: weight names, weight files, save_original_format
    loading         the one model factory: locate (hub download, detect_format), option/dtype/
                    device/flash-attn rules, load_pulse, HF models, load_model -> LoadedModel
                    (used by the adapter, `ecgbench ask`, Studio, training and the vLLM plugin)
    engine          batched generation loop shared by the adapter and bench/eval_throughput.py
    adapter         lmms-eval model `pulse` (lmms-eval's interface over loading.load_model)
    ask             `ecgbench ask` (loading.load_model + the engine, no lmms-eval)
    testing         tiny random checkpoints and a SentencePiece tokenizer for tests
"""
