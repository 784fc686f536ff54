# Hardware: boot loader and the initrd modules the root disk needs. Compare
# with `nixos-generate-config --show-hardware-config` on the machine.
{
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  boot.initrd.availableKernelModules = [ "nvme" "xhci_pci" "ahci" "usbhid" "sd_mod" ];
  hardware.enableRedistributableFirmware = true;
}
