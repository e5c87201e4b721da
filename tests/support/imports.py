"""Import statements read from a module's source, relative ones resolved: what the layout tests check."""
import ast


def import_statements(source: str, package: str, filename: str = "<source>") -> list[tuple[str, tuple[str, ...]]]:
    """Every import statement of ``source``, a module of ``package``, function-level ones included, as
    ``(module, names)``: ``import a.b`` is ``("a.b", ())``, ``from .x import y, z`` in package ``p`` is
    ``("p.x", ("y", "z"))``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module
            if node.level:
                parts = package.split(".")
                module = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.append((module, tuple(alias.name for alias in node.names)))
    return found


def heavy_modules_after(code: str, heavy=("torch", "timm", "open_clip", "pandas", "matplotlib"),
                        env=None) -> tuple[list, str]:
    """Which of ``heavy`` a fresh interpreter has imported after running ``code`` (from the project's root, with the
    environment's variables and ``env`` over them), and what ``code`` printed; ``code`` failing is an
    AssertionError showing its stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = f"\nimport sys\nprint(sorted(m for m in {tuple(heavy)!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", code + probe], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
                            check=False)
    assert result.returncode == 0, result.stderr
    printed, _, probed = result.stdout.rstrip("\n").rpartition("\n")
    return eval(probed), printed  # noqa: S307 - the list the probe printed
