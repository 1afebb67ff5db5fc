"""Registers the commands that talk to a running VIM through :mod:`vimkit.client` (docs/cli.md)."""

import typer


def register(app: typer.Typer) -> None:
    from vimkit.cli.cluster import cluster_app
    from vimkit.cli.resources import compute_app, flavour_app, storage_app
    from vimkit.cli.resources_more import (
        alarm_app,
        network_app,
        pm_job_app,
        port_app,
        subnet_app,
        subscription_app,
        threshold_app,
    )
    from vimkit.cli.watch import register_watch

    for name, sub in (("compute", compute_app), ("network", network_app), ("subnet", subnet_app),
                      ("port", port_app), ("storage", storage_app), ("flavour", flavour_app),
                      ("alarm", alarm_app), ("pm-job", pm_job_app), ("threshold", threshold_app),
                      ("subscription", subscription_app), ("cluster", cluster_app)):
        app.add_typer(sub, name=name)
    register_watch(app)
