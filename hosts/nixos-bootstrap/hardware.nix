# Generic aarch64 UEFI machine (virtio disks under QEMU, or a real board with
# UEFI firmware).
{
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_blk" "virtio_scsi" "nvme" "xhci_pci" "usbhid" ];
  hardware.enableRedistributableFirmware = true;
}
