"""``condor_vm_control``: the running VM of a job, from inside its sandbox (after ``condor_ssh_to_job``).

See docs/console-and-ssh.md.  Every command finds the job's runner and talks to the job's own
libvirt session (or, for script-managed jobs, to the admin's script).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from .. import jobcontract
from ..control import console as console_module
from ..control import sshfwd
from ..control.guests import Guest, LibvirtGuest, open_guest, signal_runner
from ..errors import ControlError
from ..runner.sandbox import sandbox_root
from ..runner.script_backend import configured_script_dir
from .common import CONTEXT_SETTINGS, reports_errors

READY_SECONDS = 30.0


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--sandbox", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The job's sandbox (default: $_CONDOR_SCRATCH_DIR, else the working directory).")
@click.option("--libvirt-uri", "uri", envvar="VMSUBMIT_LIBVIRT_URI", default=None,
              help="The libvirt URI the runner was configured with (default: the job's private session).")
@click.option("--script-dir", type=click.Path(file_okay=False, path_type=Path), envvar="VMSUBMIT_SCRIPT_DIR",
              default=None, help="The admin's script directory (default: the VMSUBMIT_SCRIPT_DIR knob).")
@click.pass_context
def main(context: click.Context, sandbox: Path | None, uri: str | None, script_dir: Path | None) -> None:
    """Watch and steer the VM of the HTCondor job whose sandbox you are in."""
    context.obj = {"sandbox": (sandbox or sandbox_root(os.environ, Path.cwd())).resolve(), "uri": uri,
                   "script_dir": script_dir}


def guest(context: click.Context) -> Guest:
    settings = context.find_root().obj
    return open_guest(settings["sandbox"], libvirt_uri=settings["uri"],
                      script_dir=settings["script_dir"] or configured_script_dir())


def libvirt_guest(context: click.Context, what: str) -> LibvirtGuest:
    found = guest(context)
    if not isinstance(found, LibvirtGuest):
        raise ControlError(f"{what} needs a libvirt-managed VM; this job's VM is run by {found.description}")
    return found


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print the state and where it comes from as JSON.")
@click.pass_context
@reports_errors
def status(context: click.Context, as_json: bool) -> None:
    """The VM's state: running, paused or shutoff."""
    found = guest(context)
    state = found.status()
    if as_json:
        click.echo(json.dumps({"state": state, "backend": "libvirt" if isinstance(found, LibvirtGuest) else "script",
                               "runner_pid": found.runner.pid if found.runner else None,
                               "description": found.description}))
    else:
        click.echo(f"{state} ({found.description})")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("-f", "--follow", is_flag=True,
              help="Follow the console log read-only (the default when the console is a file only).")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=10, show_default=True,
              help="Lines of the log to show first when following it.")
@click.option("--force", is_flag=True, help="Take the console over from another session attached to it.")
@click.pass_context
@reports_errors
def console(context: click.Context, follow: bool, lines: int, force: bool) -> None:
    """Attach to the VM's serial console (Ctrl-] detaches), or follow its log."""
    found = guest(context)
    target = found.console_target()
    if target.interactive and not follow and isinstance(found, LibvirtGuest):
        click.echo(f"Connected to the console of {found.description} (Ctrl-] detaches)", err=True)
        why = console_module.attach(found.domain, force=force)
        click.echo(f"\r\nconsole: {why}", err=True)
        return
    if target.log is None:
        raise ControlError("the VM's console goes neither to a terminal nor to a file this tool can read")
    console_module.follow(target.log, lines=lines, keep_following=True, running=found.running)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.pass_context
@reports_errors
def pause(context: click.Context) -> None:
    """Freeze the VM (its console stops, its clock stands still)."""
    guest(context).pause()


@main.command(context_settings=CONTEXT_SETTINGS)
@click.pass_context
@reports_errors
def resume(context: click.Context) -> None:
    """Let a paused VM run again."""
    guest(context).resume()


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds to wait for the runner to save the guest.")
@click.pass_context
@reports_errors
def checkpoint(context: click.Context, timeout: float) -> None:
    """Save the VM now into vm-checkpoint/, through the runner's own checkpoint path.

    HTCondor transfers the saved state to the submit side and restarts the job in the same
    sandbox, which restores the VM where it was: the job goes on.
    """
    click.echo(guest(context).checkpoint(timeout))


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--force", is_flag=True, help="End the VM at once (the runner destroys it; the job exits with 130).")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for the VM to power off.")
@click.pass_context
@reports_errors
def stop(context: click.Context, force: bool, timeout: float) -> None:
    """Power the VM off (ACPI power button); the job ends with the guest's exit status."""
    found = guest(context)
    if force and found.runner is not None:
        signal_runner(found.runner, signal.SIGINT, timeout, "ending the guest")
    else:
        found.stop(timeout)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"The PNG file to write [default: {jobcontract.SCREEN_DIR}/screenshot-TIME.png in the sandbox].")
@click.pass_context
@reports_errors
def screenshot(context: click.Context, output: Path | None) -> None:
    """Write a PNG of the VM's display now."""
    from ..runner.screen import ScreenError, write_png

    image = guest(context).screenshot()
    if output is None:
        folder = context.find_root().obj["sandbox"] / jobcontract.SCREEN_DIR
        folder.mkdir(exist_ok=True)
        output = folder / f"screenshot-{time.strftime('%Y%m%d-%H%M%S')}.png"
    try:
        width, height = write_png(image, output)
    except ScreenError as exc:
        raise ControlError(f"screenshot: {exc}") from None
    except OSError as exc:
        raise ControlError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"{output} ({width}x{height})")


@main.command("ssh-socket", context_settings=CONTEXT_SETTINGS)
@click.option("--background", is_flag=True, help="Serve in the background until the VM stops.")
@click.option("--port", type=click.IntRange(1, 65535), default=sshfwd.SSH_PORT, show_default=True,
              help="The guest's port to forward.")
@click.pass_context
@reports_errors
def ssh_socket(context: click.Context, background: bool, port: int) -> None:
    """Forward the guest's ssh port onto the UNIX socket vm-ssh.sock in the sandbox."""
    path = context.find_root().obj["sandbox"] / sshfwd.SOCKET_NAME
    if sshfwd.serving(path):
        click.echo(f"{path} already forwards the guest's port")
        return
    if background:
        _serve_in_background(context, port)
        click.echo(f"guest port {port} on {path} until the VM stops; connect with:\n"
                   f"  ssh -o ProxyCommand='nc -U {path}' USER@guest")
        return
    found = libvirt_guest(context, "ssh forwarding")
    host_port = sshfwd.forward(found.domain, port)
    sshfwd.serve(path, host_port, found.running,
                 ready=lambda: click.echo(f"guest port {port} on {path} (Ctrl-C stops)", err=True))


def _serve_in_background(context: click.Context, port: int) -> None:
    """Run ``ssh-socket`` in a session of its own; return once its socket listens."""
    settings = context.find_root().obj
    command = [sys.executable, "-m", "condor_vmsubmit.cli.control", "--sandbox", str(settings["sandbox"])]
    if settings["uri"]:
        command += ["--libvirt-uri", settings["uri"]]
    command += ["ssh-socket", "--port", str(port)]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    readable, _, _ = select.select([server.stderr], [], [], READY_SECONDS)
    line = server.stderr.readline().decode(errors="replace").strip() if readable else ""
    server.stderr.close()
    if not line.startswith("guest port"):
        if server.poll() is None:
            server.kill()
        raise ControlError(line.removeprefix("condor_vm_control: error: ") or "the forwarder did not start")


@main.command("ssh-proxy", context_settings=CONTEXT_SETTINGS)
@click.option("--port", type=click.IntRange(1, 65535), default=sshfwd.SSH_PORT, show_default=True,
              help="The guest's port to connect to.")
@click.pass_context
@reports_errors
def ssh_proxy(context: click.Context, port: int) -> None:
    """Connect standard input and output to the guest's ssh port (an ssh ProxyCommand)."""
    sshfwd.proxy_stdio(sshfwd.forward(libvirt_guest(context, "ssh forwarding").domain, port))


if __name__ == "__main__":
    main(prog_name="condor_vm_control")
