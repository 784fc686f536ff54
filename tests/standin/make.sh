#!/usr/bin/env bash
# make.sh CACHE_DIR OUT_DIR
#
# Builds the labimg boot-test STAND-IN kit: a Debian arm64 kernel + busybox
# system that stands in for a NixOS system (whose closure cannot be built on
# these machines), from the .debs fetch.sh put in CACHE_DIR. Produces:
#   OUT_DIR/vmlinuz      uncompressed arm64 Image for QEMU -kernel
#   OUT_DIR/dtbs/        Raspberry Pi DTBs (bcm2837-rpi-3-b.dtb, bcm2711-rpi-4-b.dtb, ...)
#   OUT_DIR/initrd.gz    gzip newc initramfs: busybox-static, SD/virtio/ext4/vfat
#                        modules, /init = initrd-init.sh
#   OUT_DIR/rootfs/      root tree for labimg --rootfs: busybox, /etc,
#                        /sbin/init = firstboot.sh (the first-boot check)
#   OUT_DIR/u-boot/      u-boot.bin for rpi_3, rpi_4, rpi_arm64 (from u-boot-rpi)
#   OUT_DIR/kver         the kernel release
# Idempotent: does nothing when OUT_DIR/.standin-stamp matches the inputs
# (the .debs, this script, initrd-init.sh, firstboot.sh) and the outputs are
# present; otherwise rebuilds everything. rootfs files are owned by whoever
# runs make.sh (labimg makes them root-owned in the image).
# Needs: dpkg-deb, kmod (depmod, modprobe), cpio, gzip, sha256sum.
set -euo pipefail

usage() { echo "usage: $0 CACHE_DIR OUT_DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d $1 ]] || { echo "make.sh: no cache dir $1: run fetch.sh $1 first" >&2; exit 1; }
cache=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)

die() { echo "make.sh: $*" >&2; exit 1; }
for tool in dpkg-deb depmod modprobe cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (packages: dpkg kmod cpio gzip coreutils)"
done

# Modules the initramfs loads (with their dependencies, in modprobe order):
# SD card on raspi3b (sdhost: bcm2835, sdhci: sdhci_iproc), virtio disk on
# virt, ext4 (crc32c is a softdep), vfat + the code pages of the default
# mount options, and the watchdog that makes poweroff end QEMU on raspi3b.
MODULES=(
    crc32c_generic ext4
    vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8
    virtio_mmio virtio_pci virtio_blk
    sdhci_iproc bcm2835
    bcm2835_wdt
)
# Applets the two init scripts use, linked to /bin/busybox.
APPLETS=(
    sh ash cat cut dmesg echo findfs grep head insmod ls lsmod mkdir mount
    poweroff reboot rm sleep stat switch_root sync tail tr true false umount
    uname usleep
)

[[ -f $cache/debs.txt ]] || die "$cache/debs.txt missing: run fetch.sh $cache first"
deb_of() {
    local f
    f=$(awk -v r="$1" '$1 == r {print $2}' "$cache/debs.txt")
    [[ -n $f && -s $cache/$f ]] || die "no $1 .deb in $cache (run fetch.sh $cache)"
    echo "$cache/$f"
}
kdeb=$(deb_of kernel)
bdeb=$(deb_of busybox)
udeb=$(deb_of uboot)

stamp=$( {
    sha256sum "$kdeb" "$bdeb" "$udeb" | awk '{print $1}'
    cat "${BASH_SOURCE[0]}" "$here/initrd-init.sh" "$here/firstboot.sh" | sha256sum | awk '{print $1}'
    printf '%s\n' "${MODULES[@]}" "${APPLETS[@]}"
} | sha256sum | awk '{print $1}')

outputs=(vmlinuz dtbs/bcm2837-rpi-3-b.dtb dtbs/bcm2711-rpi-4-b.dtb initrd.gz rootfs/sbin/init rootfs/bin/busybox kver)
uptodate=true
for o in "${outputs[@]}"; do
    [[ -e $out/$o ]] || uptodate=false
done
if $uptodate && [[ -f $out/.standin-stamp && $(cat "$out/.standin-stamp") == "$stamp" ]]; then
    exit 0
fi

echo "make.sh: building the stand-in kit in $out" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
new=$work/new
mkdir -p "$new"

# --- kernel, DTBs, modules -------------------------------------------------
dpkg-deb -x "$kdeb" "$work/k"
kvers=()
for d in "$work"/k/lib/modules/*/; do
    kvers+=("$(basename "$d")")
done
[[ ${#kvers[@]} -eq 1 ]] || die "expected one kernel release in $kdeb, found: ${kvers[*]:-none}"
kver=${kvers[0]}
echo "$kver" >"$new/kver"

vmlinuz=$work/k/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "$kdeb has no boot/vmlinuz-$kver"
if [[ $(head -c 2 "$vmlinuz" | od -An -tx1 | tr -d ' \n') == 1f8b ]]; then
    gzip -dc "$vmlinuz" >"$new/vmlinuz"
else
    cp "$vmlinuz" "$new/vmlinuz"
fi
# arm64 Image header: magic "ARM\x64" at offset 56
[[ $(dd if="$new/vmlinuz" bs=1 skip=56 count=4 status=none | od -An -tx1 | tr -d ' \n') == 41524d64 ]] \
    || die "vmlinuz from $kdeb is not an uncompressed arm64 Image"

mkdir -p "$new/dtbs"
dtbdir=$work/k/usr/lib/linux-image-$kver/broadcom
cp "$dtbdir"/bcm27*-rpi-*.dtb "$dtbdir"/bcm28*-rpi-*.dtb "$new/dtbs/" 2>/dev/null || true
for d in bcm2837-rpi-3-b.dtb bcm2711-rpi-4-b.dtb; do
    [[ -f $new/dtbs/$d ]] || die "$kdeb has no usr/lib/linux-image-$kver/broadcom/$d"
done

depmod -b "$work/k" "$kver"
moddir=$work/k/lib/modules/$kver
modlist=()
for m in "${MODULES[@]}"; do
    deps=$(modprobe -d "$work/k" -S "$kver" --show-depends "$m" 2>&1) \
        || die "module $m: $deps"
    while read -r kind path _; do
        case $kind in
            insmod) modlist+=("${path#"$moddir"/}") ;;
            builtin) ;;
            *) die "module $m: unexpected modprobe output: $kind $path" ;;
        esac
    done <<<"$deps"
done

# --- busybox ----------------------------------------------------------------
dpkg-deb -x "$bdeb" "$work/b"
busybox=$work/b/bin/busybox
[[ -x $busybox ]] || die "$bdeb has no bin/busybox"

# install_busybox DIR: /bin/busybox plus applet links in DIR/bin and DIR/sbin
install_busybox() {
    mkdir -p "$1/bin" "$1/sbin"
    cp "$busybox" "$1/bin/busybox"
    local a
    for a in "${APPLETS[@]}"; do
        ln -s busybox "$1/bin/$a"
    done
}

# --- initramfs ----------------------------------------------------------------
ir=$work/initrd
mkdir -p "$ir"/{dev,proc,sys,newroot,etc}
install_busybox "$ir"
install -m 0755 "$here/initrd-init.sh" "$ir/init"
: >"$ir/etc/standin-modules"
declare -A seen=()
for rel in "${modlist[@]}"; do
    [[ -z ${seen[$rel]:-} ]] || continue
    seen[$rel]=1
    case $rel in
        *.ko) ;;
        *) die "compressed module $rel: add decompression to make.sh" ;;
    esac
    mkdir -p "$ir/lib/modules/$kver/$(dirname "$rel")"
    cp "$moddir/$rel" "$ir/lib/modules/$kver/$rel"
    echo "$rel" >>"$ir/etc/standin-modules"
done
# Fixed mtimes: the same inputs give a byte-identical initrd.gz.
find "$ir" -exec touch -h -d @0 {} +
(cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
    | gzip -9n >"$new/initrd.gz"

# --- root tree (what labimg gets as --rootfs) -------------------------------
rf=$new/rootfs
mkdir -p "$rf"/{dev,proc,sys,run,tmp,mnt,root,etc}
chmod 1777 "$rf/tmp"
chmod 0700 "$rf/root"
install_busybox "$rf"
install -m 0755 "$here/firstboot.sh" "$rf/sbin/init"
echo standin >"$rf/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rf/etc/passwd"
printf 'root:x:0:\n' >"$rf/etc/group"
cat >"$rf/etc/os-release" <<OSR
NAME="labimg stand-in"
ID=labimg-standin
PRETTY_NAME="labimg boot-test stand-in for NixOS (Debian $kver + busybox)"
OSR
# /etc/ssh is left out on purpose: as in a NixOS SD image (whose /etc is made
# on activation), labimg must create it when it injects the host key.

# --- U-Boot -----------------------------------------------------------------
dpkg-deb -x "$udeb" "$work/u"
for b in rpi_3 rpi_4 rpi_arm64; do
    if [[ -f $work/u/usr/lib/u-boot/$b/u-boot.bin ]]; then
        mkdir -p "$new/u-boot/$b"
        cp "$work/u/usr/lib/u-boot/$b/u-boot.bin" "$new/u-boot/$b/"
    fi
done

# --- replace the outputs ------------------------------------------------------
rm -f "$out/.standin-stamp"
for o in vmlinuz dtbs initrd.gz rootfs u-boot kver; do
    rm -rf "${out:?}/$o"
    mv "$new/$o" "$out/$o"
done
echo "$stamp" >"$out/.standin-stamp"
echo "make.sh: kernel $kver, ${#seen[@]} modules, initrd $(du -k "$out/initrd.gz" | cut -f1) KiB" >&2
