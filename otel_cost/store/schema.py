"""The DDL in `clickhouse/*.sql`, applied in file-name order and recorded in `schema_migrations`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["migrations", "split_statements", "sql_dir"]


def sql_dir() -> Path:
    """`clickhouse/` next to the package (a source checkout) or inside it (an installed wheel)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "clickhouse", package.parent / "clickhouse"):
        if (candidate / "001_requests.sql").is_file():
            return candidate
    raise FileNotFoundError(f"clickhouse/*.sql not found next to {package}")


def split_statements(text: str) -> list[str]:
    """Statements of a .sql file: `--` comments dropped, split at `;` that ends a line."""
    lines = []
    for line in text.splitlines():
        code = line.split("--", 1)[0].rstrip() if "--" in line and "'" not in line else line.rstrip()
        if code.strip():
            lines.append(code)
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.endswith(";"):
            statements.append("\n".join(current).rstrip(";").strip())
            current = []
    if current:
        statements.append("\n".join(current).strip())
    return [statement for statement in statements if statement]


def migrations() -> list[tuple[str, list[str]]]:
    """(file name, statements) for every DDL file, in order (query files under queries/ excluded)."""
    return [(path.name, split_statements(path.read_text())) for path in sorted(sql_dir().glob("[0-9]*.sql"))]
