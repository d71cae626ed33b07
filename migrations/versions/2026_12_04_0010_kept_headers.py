"""Keep the response headers the archiver acts on, and withhold bodies that cannot be scanned.

Why: (issues 17 and 19) a listing's `Link: <...>; rel="next"` header says it has another page,
but kept responses did not keep it, so `rebuild` would have taken such a page for the whole
listing; and a body in no encoding JSON allows cannot be scanned for the API key, so it must not
be kept.

- `api_responses.headers`: the headers of `client.KEPT_HEADERS` the response had (`Date`, `Link`),
  the key masked, as a JSON object; null where there were none (and for responses kept before).
- `api_response_bodies.withheld`: why a body was not kept (its `sha256` and `size_bytes` are of
  the body as received; `body` is then empty); null for every body that was kept.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_responses") as batch:
        batch.add_column(sa.Column("headers", sa.Text()))
    with op.batch_alter_table("api_response_bodies") as batch:
        batch.add_column(sa.Column("withheld", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("api_response_bodies") as batch:
        batch.drop_column("withheld")
    with op.batch_alter_table("api_responses") as batch:
        batch.drop_column("headers")
