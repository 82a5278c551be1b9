# Sourced by scripts/demo and scripts/test: install what condor_vmsubmit needs on Debian 12 (as root)
# and put a virtual environment holding the project on PATH.  Safe to run again: it skips what is there.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VMSUBMIT_VENV:-$REPO/.venv}

# Debian packages: libvirt + QEMU (real guests under TCG), qemu-img, OVMF (EFI guests), virtinst (benchmark reference),
# ffmpeg (the video of --capture-screen, ffprobe in its tests),
# kernels and busybox for the tiny test guest (syslinux, mtools, dosfstools and systemd-boot-efi put it on a
# disk that BIOS and UEFI boot) (the generic kernel has 9p for shared folders; no
# initramfs is generated for them, INITRD=No), and what builds libvirt-python.
DEBIAN_PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev libvirt0 pkg-config
  qemu-system-x86 qemu-utils ovmf virtinst linux-image-cloud-amd64 linux-image-amd64 busybox-static cpio
  genisoimage netcat-openbsd openssh-client ffmpeg
  syslinux syslinux-common mtools dosfstools systemd-boot-efi
  python3 python3-venv python3-dev gcc
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive INITRD=No apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import condor_vmsubmit, libvirt, pytest, jsonschema, ruff" 2>/dev/null \
   || [ "$REPO/pyproject.toml" -nt "$VENV/.installed" ]; then
  echo "setup: installing condor_vmsubmit and its Python dependencies into $VENV"
  log=$(mktemp)
  if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$REPO[execute,test]"; } >"$log" 2>&1; then
    cat "$log"; echo "setup: pip install failed" >&2; exit 1
  fi
  rm -f "$log"
  touch "$VENV/.installed"
fi
export PATH="$VENV/bin:$PATH"
