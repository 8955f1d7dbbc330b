"""Re-exports of pulse_tasks.glue.hooks for lmms-eval, which loads this file by path (keep it thin)."""

from pulse_tasks.glue.hooks import (  # noqa: F401
    AGGREGATIONS,
    AGGREGATIONS_GOLD_HISTORY,
    PROCESS_DOCS,
    doc_to_messages,
    doc_to_messages_gold_history,
    doc_to_target,
    doc_to_text,
    doc_to_text_gold_history,
    doc_to_visual,
    process_docs_arena_gold_history,
    process_results,
    process_results_gold_history,
)

process_docs_ptb = PROCESS_DOCS["ptb-test"]
process_docs_ptb_report = PROCESS_DOCS["ptb-test-report"]
process_docs_code15 = PROCESS_DOCS["code15-test"]
process_docs_ecgqa = PROCESS_DOCS["ecgqa-test"]
process_docs_cpsc = PROCESS_DOCS["cpsc-test"]
process_docs_csn = PROCESS_DOCS["csn-test-no-cot"]
process_docs_g12 = PROCESS_DOCS["g12-test-no-cot"]
process_docs_mmmu = PROCESS_DOCS["mmmu-ecg"]
process_docs_arena = PROCESS_DOCS["arena"]

agg_auc_paper = AGGREGATIONS["auc_paper"]
agg_f1_paper = AGGREGATIONS["f1_paper"]
agg_hamming_loss_paper = AGGREGATIONS["hamming_loss_paper"]
agg_auc_strict = AGGREGATIONS["auc_strict"]
agg_f1_strict = AGGREGATIONS["f1_strict"]
agg_hamming_loss_strict = AGGREGATIONS["hamming_loss_strict"]
agg_unparsed = AGGREGATIONS["unparsed"]
agg_invalid_rate = AGGREGATIONS["invalid_rate"]
agg_judge_score = AGGREGATIONS["judge_score"]
agg_diagnosis = AGGREGATIONS["diagnosis"]
agg_waveform = AGGREGATIONS["waveform"]
agg_rhythm = AGGREGATIONS["rhythm"]
agg_judge_failed = AGGREGATIONS["judge_failed"]
agg_judge_skipped = AGGREGATIONS["judge_skipped"]
agg_judge_items = AGGREGATIONS["judge_items"]
agg_accuracy_paper = AGGREGATIONS["accuracy_paper"]
agg_accuracy_strict = AGGREGATIONS["accuracy_strict"]
agg_accuracy = AGGREGATIONS["accuracy"]
agg_completeness = AGGREGATIONS["completeness"]
agg_instruction_adherence = AGGREGATIONS["instruction_adherence"]

# The arena variant for adapters without multi-round generation.
agg_gold_history_judge_score = AGGREGATIONS_GOLD_HISTORY["judge_score"]
agg_gold_history_accuracy = AGGREGATIONS_GOLD_HISTORY["accuracy"]
agg_gold_history_completeness = AGGREGATIONS_GOLD_HISTORY["completeness"]
agg_gold_history_instruction_adherence = AGGREGATIONS_GOLD_HISTORY["instruction_adherence"]
agg_gold_history_judge_failed = AGGREGATIONS_GOLD_HISTORY["judge_failed"]
agg_gold_history_judge_skipped = AGGREGATIONS_GOLD_HISTORY["judge_skipped"]
agg_gold_history_judge_items = AGGREGATIONS_GOLD_HISTORY["judge_items"]
