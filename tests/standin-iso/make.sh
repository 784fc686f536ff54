#!/usr/bin/env bash
# make.sh CACHE_DIR OUT_DIR [ARCH]
#
# Builds the labimg STAND-IN base installer ISO for ARCH (x86_64, the
# default, or aarch64):
#   OUT_DIR/installer-ARCH.standin.iso
# a Debian 12 kernel + busybox + dropbear initramfs in NixOS's installer ISO
# boot layout, standing in for the NixOS installer ISO
# (nixosConfigurations.installer-ARCH) that cannot be built on these
# machines. Made from the .debs fetch.sh put in CACHE_DIR (fetched for ARCH):
#   /boot/bzImage (x86_64),          the kernel (NixOS's kernelFile names)
#   /boot/Image (aarch64)
#   /boot/initrd                     initramfs (/init = installer-init.sh)
#   /boot/efi.img                    El Torito EFI image (FAT "EFIBOOT": EFI/boot/{BOOTEFI,grub.cfg})
#   /EFI/boot/BOOTEFI, grub.cfg      GRUB EFI (grub-mkimage, prefix /EFI/boot), BOOTEFI being
#                                    bootx64.efi or bootaa64.efi; grub.cfg finds the ISO
#                                    through the marker /EFI/nixos-installer-image
#   /EFI/nixos-installer-image       the marker file
#   /isolinux/ (x86_64 only)         isolinux.bin, ldlinux.c32, isolinux.cfg (BIOS El Torito)
#   /version.txt                     what this is
#   /standin/ (x86_64 only)          iso-tools.txt's commands and libraries, systemd-boot
# and, x86_64 only, OUT_DIR/standin-system-x86_64/{bzImage,initrd}: the
# stand-in system's kernel and initramfs (system-init.sh) for the install
# tests (standin-system.nix).
# hybrid, as nixpkgs' make-iso9660-image.sh and iso-image.nix make it: a GPT
# naming the EFI image (-isohybrid-gpt-basdat), and on x86_64 (which boots
# from BIOS too) the isohdpfx.bin MBR (-isohybrid-mbr). Kernel command line:
# console=ttyS0 (x86_64) or console=ttyAMA0 (aarch64, QEMU virt's PL011). No
# keys: labimg adds lab/ afterwards.
# Byte-reproducible: SOURCE_DATE_EPOCH (default 1700000000) fixes every
# date, the FAT volume id and GPT GUIDs are fixed, files go in sorted order.
# Idempotent: does nothing when OUT_DIR/.standin-iso-stamp matches the
# inputs (the .debs, these scripts, SOURCE_DATE_EPOCH) and the ISO is there.
# Needs: dpkg-deb, kmod (depmod, modprobe), cpio, gzip, xorriso, grub-mkimage
# (grub-common), mtools, dosfstools, faketime, sha256sum.
set -euo pipefail

usage() { echo "usage: $0 CACHE_DIR OUT_DIR [x86_64|aarch64]" >&2; exit 2; }
[[ $# -eq 2 || $# -eq 3 ]] || usage
ARCH=${3:-x86_64}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d $1 ]] || { echo "make.sh: no cache dir $1: run fetch.sh $1 first" >&2; exit 1; }
cache=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)

die() { echo "make.sh: $*" >&2; exit 1; }
for tool in dpkg-deb depmod modprobe cpio gzip xorriso grub-mkimage mkfs.vfat mmd mcopy fsck.vfat faketime sha256sum readelf; do
    command -v "$tool" >/dev/null \
        || die "$tool not found (packages: dpkg kmod cpio gzip xorriso grub-common mtools dosfstools faketime coreutils binutils)"
done

SDE=${SOURCE_DATE_EPOCH:-1700000000}
[[ $SDE =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be whole seconds"
ISO_NAME=installer-$ARCH.standin.iso
VOLID=labimg-standin-installer-$ARCH
# Per architecture: Debian's name for it, the kernel file name (NixOS's
# kernelFile), the console, GRUB's platform and EFI file, the dynamic loader,
# the GPT disk GUID of the hybrid table (xorriso would derive one from the
# date) and the modules the initramfs loads (their dependencies follow in
# modprobe order).
case $ARCH in
    x86_64)
        DEB_ARCH=amd64 KERNEL_FILE=bzImage CMDLINE="console=ttyS0"
        GRUB_PLATFORM=x86_64-efi EFI_FILE=bootx64.efi LOADER=lib64/ld-linux-x86-64.so.2
        GPT_GUID=6c61622d7374616e642d696e2d697830
        # CD (q35's AHCI + sr_mod + isofs), disks (virtio, AHCI, USB
        # storage), NICs for QEMU user networking (virtio_net, e1000 (pc),
        # e1000e (q35)).
        MODULES=(
            ahci sr_mod sd_mod isofs
            virtio_pci virtio_blk virtio_scsi virtio_net
            xhci_pci ehci_pci uhci_hcd usb_storage
            e1000 e1000e
            # what labprov disk needs on the target (install-tools.txt):
            # the filesystems it makes and mounts, device-mapper with
            # dm-crypt (LUKS2's default aes-xts-plain64, the kernel crypto
            # API cryptsetup uses for keyslots) and LVM's targets, md RAID
            ext4 vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8 btrfs xfs
            dm_mod dm_crypt dm_snapshot dm_thin_pool dm_mirror
            xts aes_generic sha256_generic algif_skcipher algif_hash
            md_mod raid0 raid1 raid10
        )
        ;;
    aarch64)
        DEB_ARCH=arm64 KERNEL_FILE=Image CMDLINE="console=ttyAMA0"
        GRUB_PLATFORM=arm64-efi EFI_FILE=bootaa64.efi LOADER=lib/ld-linux-aarch64.so.1
        GPT_GUID=6c61622d7374616e642d696e2d616130
        # QEMU virt: virtio disks, CD (virtio-scsi + sr_mod) and NIC, USB
        # storage on xhci.
        MODULES=(
            sr_mod sd_mod isofs
            virtio_pci virtio_mmio virtio_blk virtio_scsi virtio_net
            xhci_pci usb_storage
        )
        ;;
    *) usage ;;
esac
TRIPLET=$ARCH-linux-gnu
# GRUB EFI modules: nixpkgs' iso-image.nix list, less the graphical ones,
# plus terminal for the serial console.
GRUB_MODULES=(
    fat iso9660 part_gpt part_msdos normal boot linux configfile loopback chain halt
    efifwsetup efi_gop ls search search_label search_fs_uuid search_fs_file
    test all_video loadenv echo serial terminal
)

[[ -f $cache/debs.txt ]] || die "$cache/debs.txt missing: run fetch.sh $cache first"
deb_of() {
    local f
    f=$(awk -v r="$1" '$1 == r {print $2}' "$cache/debs.txt")
    [[ -n $f && -s $cache/$f ]] || die "no $1 .deb in $cache (run fetch.sh $cache)"
    echo "$cache/$f"
}
ROLES=(kernel busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 zlib1g libgmp10
    "grub-efi-$DEB_ARCH-bin")
[[ $ARCH != x86_64 ]] || ROLES+=(isolinux syslinux-common)
# x86_64: what labprov needs on the target, PACKAGE [COMMAND...] per line,
# in the initramfs (install-tools.txt) or on the ISO (iso-tools.txt); and
# systemd-boot for the stand-in nixos-install.
declare -A install_commands=() iso_commands=()
if [[ $ARCH == x86_64 ]]; then
    while read -r pkg cmds; do
        ROLES+=("$pkg")
        install_commands[$pkg]=$cmds
    done < <(awk '!/^#/ && NF' "$here/install-tools.txt")
    while read -r pkg cmds; do
        [[ -n ${install_commands[$pkg]+set} ]] || ROLES+=("$pkg")
        iso_commands[$pkg]=$cmds
    done < <(awk '!/^#/ && NF' "$here/iso-tools.txt")
    ROLES+=(systemd-boot-efi)
fi
debs=()
for r in "${ROLES[@]}"; do
    debs+=("$(deb_of "$r")")
done

stamp=$( {
    sha256sum "${debs[@]}" | awk '{print $1}'
    cat "${BASH_SOURCE[0]}" "$here"/*-init.sh "$here/udhcpc.sh" "$here"/*-tools.txt "$here"/standin-*.sh \
        | sha256sum | awk '{print $1}'
    printf '%s\n' "$ARCH" "$SDE" "${MODULES[@]}" "${GRUB_MODULES[@]}"
    xorriso -version 2>/dev/null | head -n 1
} | sha256sum | awk '{print $1}')

stampfile=$out/.$ISO_NAME.stamp
if [[ -s $out/$ISO_NAME && -f $stampfile && $(cat "$stampfile") == "$stamp" ]] \
    && [[ $ARCH != x86_64 || -s $out/standin-system-$ARCH/initrd ]]; then
    exit 0
fi

echo "make.sh: building the $ARCH stand-in installer ISO in $out" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
x=$work/x
for d in "${debs[@]}"; do
    dpkg-deb -x "$d" "$x"
done
iso=$work/iso
mkdir -p "$iso/boot" "$iso/EFI/boot"

# --- kernel and modules ---------------------------------------------------------
kvers=()
for d in "$x"/lib/modules/*/; do
    kvers+=("$(basename "$d")")
done
[[ ${#kvers[@]} -eq 1 ]] || die "expected one kernel release, found: ${kvers[*]:-none}"
kver=${kvers[0]}
[[ -f $x/boot/vmlinuz-$kver ]] || die "no boot/vmlinuz-$kver in the kernel .deb"
# Debian's arm64 vmlinuz is a gzip'd Image; GRUB's arm64 loader starts the
# kernel's EFI stub, which only the plain Image has.
if gzip -t "$x/boot/vmlinuz-$kver" 2>/dev/null; then
    gzip -dc "$x/boot/vmlinuz-$kver" >"$iso/boot/$KERNEL_FILE"
else
    cp "$x/boot/vmlinuz-$kver" "$iso/boot/$KERNEL_FILE"
fi

depmod -b "$x" "$kver"
moddir=$x/lib/modules/$kver
modlist=()
for m in "${MODULES[@]}"; do
    deps=$(modprobe -d "$x" -S "$kver" --show-depends "$m" 2>&1) || die "module $m: $deps"
    while read -r kind path _; do
        case $kind in
            insmod) modlist+=("${path#"$moddir"/}") ;;
            builtin) ;;
            *) die "module $m: unexpected modprobe output: $kind $path" ;;
        esac
    done <<<"$deps"
done

# --- initramfs ----------------------------------------------------------------
ir=$work/initrd
mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,"$(dirname "$LOADER")",lib/"$TRIPLET",dev,proc,sys,iso,run,tmp,root,etc,var/log,var/run}
chmod 1777 "$ir/tmp"
chmod 0700 "$ir/root"
cp "$x/bin/busybox" "$ir/bin/busybox"
# /init links the other applets itself (busybox --install -s): a foreign
# architecture's busybox cannot list them here.
ln -s busybox "$ir/bin/sh"
cp "$x/usr/sbin/dropbear" "$ir/usr/sbin/dropbear"
for b in dropbearconvert dropbearkey; do
    cp "$x/usr/bin/$b" "$ir/usr/bin/$b"
done
# shared libraries of the dropbear binaries, from the fetched .debs only
# (nix-bin keeps its own in /usr/lib/nix)
libdirs=("$x/lib/$TRIPLET" "$x/usr/lib/$TRIPLET" "$x/usr/lib/nix")
declare -A have=()
# need_libs DEST FILE...: the libraries FILE... need, into DEST, each once.
need_libs() {
    local dest=$1 f lib d found
    shift
    for f in "$@"; do
        for lib in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
            [[ -z ${have[$dest/$lib]:-} ]] || continue
            found=""
            for d in "${libdirs[@]}"; do
                if [[ -e $d/$lib ]]; then found=$d/$lib; break; fi
            done
            [[ -n $found ]] || die "library $lib (needed by ${f##*/}) is in none of the fetched .debs"
            have[$dest/$lib]=1
            cp -L "$found" "$dest/$lib"
            need_libs "$dest" "$found"
        done
    done
}
need_libs "$ir/lib/$TRIPLET" "$ir/usr/sbin/dropbear" "$ir/usr/bin/dropbearconvert" "$ir/usr/bin/dropbearkey"
cp -L "$x/$LOADER" "$ir/$LOADER"

# The install tools (x86_64), into /usr/sbin: dropbear's PATH for root
# starts there, ahead of the busybox applets of the same names in /sbin and
# /bin. A command that is a link in its package (mkfs.ext4 -> mke2fs,
# pvcreate -> lvm) stays a link.
for pkg in "${!install_commands[@]}"; do
    for cmd in ${install_commands[$pkg]}; do
        src=""
        for d in usr/sbin sbin usr/bin bin; do
            if [[ -e $x/$d/$cmd || -L $x/$d/$cmd ]]; then src=$x/$d/$cmd; break; fi
        done
        [[ -n $src ]] || die "$cmd is not in the $pkg .deb (install-tools.txt)"
        if [[ -L $src ]]; then
            ln -sf "$(basename "$(readlink "$src")")" "$ir/usr/sbin/$cmd"
        else
            cp "$src" "$ir/usr/sbin/$cmd"
            need_libs "$ir/lib/$TRIPLET" "$src"
        fi
    done
done
# A library-only package (install-tools.txt lists no command) ships its
# shared objects whole: labprov, which the tests upload (a NixOS installer
# has it from the flake), links libgcc_s, which no listed command needs.
for pkg in "${!install_commands[@]}"; do
    [[ -z ${install_commands[$pkg]} ]] || continue
    while read -r rel; do
        lib=${rel##*/}
        [[ -z ${have[$ir/lib/$TRIPLET/$lib]:-} ]] || continue
        have[$ir/lib/$TRIPLET/$lib]=1
        cp -L "$x/$rel" "$ir/lib/$TRIPLET/$lib"
    done < <(dpkg-deb --fsys-tarfile "$(deb_of "$pkg")" | tar -t | sed -n 's|^\./||; /\/lib\/'"$TRIPLET"'\/[^/]*\.so\.[0-9]*$/p; /^lib\/'"$TRIPLET"'\/[^/]*\.so\.[0-9]*$/p')
done
for link in "$ir"/usr/sbin/*; do
    [[ ! -L $link || -e $link ]] || die "$(basename "$link") links to $(readlink "$link"), which install-tools.txt does not list"
done
# LVM and cryptsetup lock and keep state under /run (a tmpfs at boot) and
# /var/lock. This initramfs has no udev (NixOS's installer has): LVM must
# make its /dev/VG/LV nodes itself instead of waiting for udev's rules.
mkdir -p "$ir/var/lock" "$ir/etc/lvm"
cat >"$ir/etc/lvm/lvm.conf" <<'LVM'
# labimg STAND-IN installer: no udev here, so device-mapper nodes and the
# /dev/VG/LV links are made by LVM itself.
activation {
    udev_sync = 0
    udev_rules = 0
}
LVM

# On the ISO (x86_64): the iso-tools.txt commands with their libraries and
# the dynamic loader under /standin, a wrapper per command in the
# initramfs; systemd-boot's EFI binary; the stand-in nixos-install and
# systemctl; Nix's settings for a machine without build users.
if [[ $ARCH == x86_64 ]]; then
    mkdir -p "$iso/standin/bin" "$iso/standin/lib" "$ir/etc/nix"
    cp -L "$x/$LOADER" "$iso/standin/lib/"
    for pkg in "${!iso_commands[@]}"; do
        for cmd in ${iso_commands[$pkg]}; do
            src=""
            for d in usr/sbin sbin usr/bin bin; do
                if [[ -e $x/$d/$cmd || -L $x/$d/$cmd ]]; then src=$x/$d/$cmd; break; fi
            done
            [[ -n $src ]] || die "$cmd is not in the $pkg .deb (iso-tools.txt)"
            real=$(basename "$(readlink -f "$src")")
            [[ -e $iso/standin/bin/$real ]] || cp -L "$src" "$iso/standin/bin/$real"
            need_libs "$iso/standin/lib" "$iso/standin/bin/$real"
            # --argv0: a multi-call binary (nix) picks its mode by the name.
            # shellcheck disable=SC2016 # $0 and $@ are the wrapper's own
            printf '#!/bin/sh\n# labimg STAND-IN installer: %s from the ISO, with its libraries beside it\nexec /iso/standin/lib/%s --library-path /iso/standin/lib --argv0 "$0" /iso/standin/bin/%s "$@"\n' \
                "$cmd" "$(basename "$LOADER")" "$real" >"$ir/usr/sbin/$cmd"
            chmod 0755 "$ir/usr/sbin/$cmd"
        done
    done
    cp "$x/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$iso/standin/systemd-bootx64.efi"
    install -m 0755 "$here/standin-nixos-install.sh" "$ir/usr/sbin/nixos-install"
    install -m 0755 "$here/standin-systemctl.sh" "$ir/usr/sbin/systemctl"
    printf '%s\n' '# labimg STAND-IN installer: root only, no build users, no builds' \
        'build-users-group =' 'sandbox = false' 'experimental-features = nix-command' \
        >"$ir/etc/nix/nix.conf"
fi

install -m 0755 "$here/installer-init.sh" "$ir/init"
install -m 0644 "$here/standin-lib.sh" "$ir/lib/standin-lib.sh"
install -m 0755 "$here/udhcpc.sh" "$ir/etc/udhcpc.sh"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ir/etc/passwd"
printf 'root:*:1::::::\n' >"$ir/etc/shadow"
chmod 0600 "$ir/etc/shadow"
printf 'root:x:0:\ntty:x:5:\n' >"$ir/etc/group"
printf '/bin/sh\n' >"$ir/etc/shells"
printf '# stand-in installer: busybox init only reaps orphans\n' >"$ir/etc/inittab"
echo standin-installer >"$ir/etc/hostname"
cat >"$ir/etc/os-release" <<OSR
NAME="labimg stand-in installer"
ID=labimg-standin-installer
PRETTY_NAME="labimg STAND-IN installer for NixOS (Debian $kver + busybox + dropbear)"
OSR
: >"$ir/etc/standin-modules"
declare -A seen=()
for rel in "${modlist[@]}"; do
    [[ -z ${seen[$rel]:-} ]] || continue
    # CPU-specific CRC accelerators (crct10dif-pclmul needs PCLMULQDQ,
    # crc32c-intel SSE4.2, which QEMU's TCG CPU lacks): the generic module
    # serves.
    [[ $rel != *-pclmul.ko && $rel != */crc32c-intel.ko ]] || continue
    seen[$rel]=1
    [[ $rel == *.ko ]] || die "compressed module $rel: add decompression to make.sh"
    mkdir -p "$ir/lib/modules/$kver/$(dirname "$rel")"
    cp "$moddir/$rel" "$ir/lib/modules/$kver/$rel"
    echo "$rel" >>"$ir/etc/standin-modules"
done
# modprobe's indexes for the modules that are here (labprov, as disko,
# runs `modprobe dm-snapshot` before creating a volume group).
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [[ ! -f $moddir/$f ]] || cp "$moddir/$f" "$ir/lib/modules/$kver/$f"
done
depmod -b "$ir" "$kver"
find "$ir" -exec touch -h -d "@$SDE" {} +
# cpio_of DIR OUT: DIR as a reproducible gzip'd newc initramfs.
cpio_of() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
        | gzip -9n >"$2"
}
cpio_of "$ir" "$iso/boot/initrd"
# x86_64: the stand-in SYSTEM's kernel and initramfs (the same tree with
# system-init.sh as /init), which standin-system.nix makes a toplevel of
# for the install tests.
system_dir=$out/standin-system-$ARCH
if [[ $ARCH == x86_64 ]]; then
    install -m 0755 "$here/system-init.sh" "$ir/init"
    touch -h -d "@$SDE" "$ir/init"
    mkdir -p "$work/system"
    cp "$iso/boot/$KERNEL_FILE" "$work/system/$KERNEL_FILE"
    cpio_of "$ir" "$work/system/initrd"
fi

# --- GRUB EFI (as nixpkgs' iso-image.nix: grub-mkimage, prefix /EFI/boot) ------
grubdir=$x/usr/lib/grub/$GRUB_PLATFORM
mods=()
for m in "${GRUB_MODULES[@]}"; do
    [[ -f $grubdir/$m.mod ]] && mods+=("$m")
done
grub-mkimage --directory="$grubdir" -o "$iso/EFI/boot/$EFI_FILE" -p /EFI/boot -O "$GRUB_PLATFORM" "${mods[@]}"
: >"$iso/EFI/nixos-installer-image"
# x86_64: GRUB drives the 16550 itself; aarch64: the firmware's console is
# already the serial port.
serial_cfg=""
if [[ $ARCH == x86_64 ]]; then
    serial_cfg=$'serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console'
fi
cat >"$iso/EFI/boot/grub.cfg" <<CFG
# labimg STAND-IN installer ($ARCH): GRUB EFI menu
$serial_cfg
set timeout=0
set default=0

# Search using the marker file (as NixOS does): from the El Torito EFI
# image or the GPT EFI partition this finds the ISO filesystem.
search --set=root --file /EFI/nixos-installer-image

menuentry 'labimg STAND-IN installer ($ARCH, Debian $kver)' {
  linux /boot/$KERNEL_FILE $CMDLINE
  initrd /boot/initrd
}
CFG

# --- El Torito EFI image (FAT), as iso-image.nix's efiImg ------------------------
fat=$work/fat
mkdir -p "$fat/EFI/boot"
cp "$iso/EFI/boot/$EFI_FILE" "$iso/EFI/boot/grub.cfg" "$fat/EFI/boot/"
find "$fat" -exec touch -h -d "@$SDE" {} +
usage_size=$(($(du -s --block-size=1M --apparent-size "$fat" | cut -f1) * 1024 * 1024))
image_size=$(((usage_size * 110 / 100 / 1048576 + 1) * 1048576))
truncate --size="$image_size" "$iso/boot/efi.img"
mkfs.vfat --invariant -i 12345678 -n EFIBOOT "$iso/boot/efi.img" >/dev/null
when=$(date -u -d "@$SDE" '+%Y-%m-%d %H:%M:%S')
(
    cd "$fat"
    for d in $(find EFI -type d | LC_ALL=C sort); do
        TZ=UTC faketime "$when" mmd -i "$iso/boot/efi.img" "::/$d"
    done
    for f in $(find EFI -type f | LC_ALL=C sort); do
        TZ=UTC mcopy -pm -i "$iso/boot/efi.img" "$f" "::/$f"
    done
)
fsck.vfat -n "$iso/boot/efi.img" >/dev/null || die "fsck.vfat rejects the EFI image"

# --- isolinux (BIOS, x86_64 only) --------------------------------------------------
bios_flags=()
if [[ $ARCH == x86_64 ]]; then
    mkdir -p "$iso/isolinux"
    cp "$x/usr/lib/ISOLINUX/isolinux.bin" "$iso/isolinux/isolinux.bin"
    cp "$x/usr/lib/syslinux/modules/bios/ldlinux.c32" "$iso/isolinux/ldlinux.c32"
    cat >"$iso/isolinux/isolinux.cfg" <<CFG
# labimg STAND-IN installer (x86_64): isolinux (BIOS)
SERIAL 0 115200
DEFAULT standin
PROMPT 0
TIMEOUT 0
LABEL standin
  MENU LABEL labimg STAND-IN installer (x86_64, Debian $kver)
  LINUX /boot/$KERNEL_FILE
  INITRD /boot/initrd
  APPEND $CMDLINE
CFG
    isohdpfx=$x/usr/lib/ISOLINUX/isohdpfx.bin
    [[ -f $isohdpfx ]] || die "no isohdpfx.bin in the isolinux .deb"
    # make-iso9660-image.sh's isoBootFlags and usbBootFlags
    bios_flags=(-eltorito-boot isolinux/isolinux.bin
        -no-emul-boot -boot-load-size 4 -boot-info-table
        --sort-weight 1 /isolinux
        -isohybrid-mbr "$isohdpfx")
fi

cat >"$iso/version.txt" <<TXT
labimg STAND-IN base installer ISO ($ARCH), not NixOS: Debian $kver + busybox + dropbear.
Stands in for nixosConfigurations.installer-$ARCH's ISO in labimg's tests.
TXT

find "$iso" -exec touch -h -d "@$SDE" {} +

# --- the ISO (xorriso arguments of nixpkgs' make-iso9660-image.sh) ----------------
tmpiso=$work/$ISO_NAME
SOURCE_DATE_EPOCH=$SDE xorriso -report_about SORRY \
    -boot_image any gpt_disk_guid="$GPT_GUID" \
    -volume_date all_file_dates "=$SDE" \
    -as mkisofs \
    -iso-level 3 \
    -volid "$VOLID" \
    -appid labimg-standin \
    -publisher labimg-standin \
    -full-iso9660-filenames \
    -joliet \
    -eltorito-catalog .boot.cat \
    "${bios_flags[@]}" \
    -eltorito-alt-boot \
    -e boot/efi.img \
    -no-emul-boot \
    -isohybrid-gpt-basdat \
    -r \
    --sort-weight 0 / \
    -output "$tmpiso" \
    "$iso" || die "xorriso failed"

rm -f "$stampfile"
mv "$tmpiso" "$out/$ISO_NAME"
if [[ -d $work/system ]]; then
    rm -rf "$system_dir"
    mv "$work/system" "$system_dir"
fi
echo "$stamp" >"$stampfile"
echo "make.sh: $ISO_NAME: kernel $kver, ${#seen[@]} modules, $(du -k "$out/$ISO_NAME" | cut -f1) KiB" >&2
