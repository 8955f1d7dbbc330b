"""PULSE-7B / LLaVA-1.6 for ECGBench: the model definition and the lmms-eval adapters.

Modules (import what you need; this package import stays light, no torch):
    configuration   PulseConfig (original LLaVA config.json switches, validated)
    conversation    llava_v1 template, per-chunk tokenisation, training labels
    image_processing anyres preprocessing (bit-compatible with LLaVA's PIL path), token counts
    modeling        PulseLlavaForCausalLM (CLIP + mlp2x_gelu + Llama from transformers parts)
    checkpoint      detect_format / load_pulse / save_original_format (safetensors only)
    engine          batched generation loop shared by the adapter and bench/eval_throughput.py
    adapter         lmms-eval model `pulse`
    testing         tiny random checkpoints and a SentencePiece tokenizer for tests
"""
