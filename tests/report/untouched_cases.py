from lens_inversion.report import report

PROMPT = "The sky is blue."


def _report(model, tmp="/tmp/lens_inversion_untouched_report.html", **options):
    options = {"gradient_steps": 2, "inversion_layers": [0], **options}
    return report(model, PROMPT, path=tmp, progress=False, **options)


CASES = [("report", _report)]
ERROR_CASES = [
    ("report-bad-layer", lambda m: _report(m, inversion_layers=[7])),
    ("report-bad-ablation", lambda m: _report(m, ablation="melt")),
    ("report-bad-folder", lambda m: _report(m, tmp="/nonexistent-folder/report.html")),
]
