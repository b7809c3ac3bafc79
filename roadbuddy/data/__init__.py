"""The question files and the durable output: questions, paths, predictions.jsonl and the CSVs."""
