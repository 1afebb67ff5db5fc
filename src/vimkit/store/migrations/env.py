"""Alembic environment: vimkit passes its own connection, so no URL lives in a config file."""

from alembic import context

from vimkit.store.models import Base
import vimkit.store.alarm_tables  # noqa: F401  (alarms, for autogenerate)
import vimkit.store.network_tables  # noqa: F401  (network tables, for autogenerate)
import vimkit.store.storage_tables  # noqa: F401  (storage tables, for autogenerate)
import vimkit.store.compute_tables  # noqa: F401  (compute tables, for autogenerate)
import vimkit.store.pm_tables  # noqa: F401  (performance management tables, for autogenerate)
import vimkit.store.image_tables  # noqa: F401  (the image registry, for autogenerate)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
