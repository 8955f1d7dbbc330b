"""pulse_training: the PULSE fine-tuning recipe (LLaVA-1.6 on ECGInstruct, DeepSpeed ZeRO-2).

    recipe.py      `ecgbench-train --config FILE [--inspect N] [key=value ...]`: setup, train, save
    config.py      TrainConfig (PULSE's option names), YAML + overrides, validation
    data.py        LLaVA JSON/JSONL/hub records, start-up scan with counted skips, lazy dataset, collator
    throughput.py  FLOP model and the samples/s, tokens/s, MFU callback
    export.py      original LLaVA format <-> transformers llava_next
    smoke.py       tiny checkpoint + synthetic data for the CPU smoke run
    configs/       pulse_7b.yaml, tiny.yaml, zero2.json (PULSE's), zero3.json, zero2_cpu_smoke.json
"""
