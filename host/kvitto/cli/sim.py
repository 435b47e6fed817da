"""`kvitto` commands with virtual boards: sim (boards under the unix port) and demo (the whole
flow, then kvitto serve). Each calls kvitto.sim, which only the CLI imports.
"""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--boards", "count", default=1, show_default=True, type=int, help="How many.")
@click.option("--broker", default=None, help="mqtt://host:port the boards publish to.")
@click.option(
    "--roles",
    default="tag",
    show_default=True,
    help="Roles, cycled over the boards: tag,lock,alarm",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Flash images and logs.")
@click.option("--listen", type=click.Path(dir_okay=False), help="Unix socket for other programs.")
@click.option("--org-public-key", help="Hex of the organisation's command key (32 bytes).")
@click.option("--salt", help="Hex of the credential salt (16+ bytes); random if left out.")
@click.option("--no-prompt", is_flag=True, help="No keyboard prompt: run until interrupted.")
@click.option(
    "--pki",
    "pki_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="`kvitto pki` folder: its salt and command key, and real NTAG 424 badge keys.",
)
def sim(count, broker, roles, workdir, listen, org_public_key, salt, no_prompt, pki_dir) -> None:
    """Start virtual boards: the real firmware under the unix port, tappable from the keyboard.

    `tap N phone SEED` taps a provider phone whose app key has that 32-byte seed (hex): its
    answers are real signatures a registry with the phone's public key verifies."""
    import tempfile
    from pathlib import Path

    from kvitto.sim.board import SimError
    from kvitto.sim.fleet import run_sim

    def unhex(value: str | None, name: str) -> bytes | None:
        if value is None:
            return None
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise SimError(f"{name}: not hex") from None

    import signal

    # Paths are resolved once, here: the boards run in their own folders.
    folder = Path(workdir).resolve() if workdir else Path(tempfile.mkdtemp(prefix="kvitto-sim-"))

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the session as Ctrl-C does: boards stopped

    signal.signal(signal.SIGTERM, stop_on_term)

    def keyboard():
        while True:  # an empty line is ignored; quit, Ctrl-D or Ctrl-C end the session
            try:
                yield click.prompt("sim", default="", show_default=False, prompt_suffix="> ")
            except (click.Abort, EOFError):
                return

    lines = None
    if not no_prompt:
        lines = keyboard() if sys.stdin.isatty() else iter(sys.stdin)
    run_sim(
        count,
        broker,
        tuple(r.strip() for r in roles.split(",") if r.strip()),
        folder,
        Path(listen).resolve() if listen else folder / "sim.sock",
        unhex(org_public_key, "--org-public-key"),
        unhex(salt, "--salt"),
        lines,
        echo=click.echo,
        pki_dir=Path(pki_dir).resolve() if pki_dir else None,
    )


@click.command()
@click.option("--broker", default=None, help="MQTT broker URL (default: an embedded amqtt)")
@click.option("--profile", default="huddinge", show_default=True, help="municipality profile")
@click.option(
    "--out",
    default="kvitto-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder for report.html, report.json, the case bundle and labels",
)
@click.option("--keep", is_flag=True, help="keep the boards, store and keys in OUT/work")
@click.option(
    "--no-serve", is_flag=True, help="end after the report (CI); else serve it on the web"
)
@click.option("--port", default=8000, show_default=True, type=int, help="kvitto serve's port")
def demo(
    broker: str | None, profile: str, out: str, keep: bool, no_serve: bool, port: int
) -> None:
    """A day of home care on virtual boards, end to end; then the month in `kvitto serve`."""
    from pathlib import Path

    from kvitto.sim.demo import PROVIDER, run_demo

    outcome = run_demo(out=Path(out), broker=broker, profile=profile, keep=keep)
    if not no_serve:
        from kvitto.web.demo import serve_after_demo

        serve_after_demo(outcome, PROVIDER, profile, "127.0.0.1", port)


COMMANDS = [sim, demo]
