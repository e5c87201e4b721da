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
