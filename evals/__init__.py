"""Accuracy evals: a labeled split through the real pipeline, a report, and the tiny-model check.

    report.py      the numbers and files of a report (Wilson, McNemar, breakdowns, report.md/png)
    categories.py  question categories from the question text
    harness.py     RunConfig + split -> pipeline.run -> report folder (resumable)
    train_tiny.py  trains roadbuddy/testing/tiny_seeing/ on CPU, on roadbuddy/testing/tiny_task.py (the synthetic "seeing"
                   task: scenes, questions, the held-out split; in the package for the --demo)
    test_eval.py   the pytest entry point (marker `eval`)
"""
