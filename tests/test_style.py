"""The workflow's own checks: Snakemake's linter and snakefmt's formatting of the rule files."""
import subprocess
import sys

RULE_FILES = ["Snakefile", "rules"]


def test_snakemake_lint_is_clean(root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--config", f"outdir={tmp_path}/r"],
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_rule_files_are_snakefmt_formatted(root):
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *RULE_FILES], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
