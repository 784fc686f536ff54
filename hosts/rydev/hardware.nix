# rydev's virtual hardware: a Parallels aarch64 guest booting with UEFI.
{
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  boot.initrd.availableKernelModules = [ "xhci_pci" "sr_mod" "usbhid" ];

  # Parallels Tools: shared folders, clipboard, time sync (unfree, allowed in
  # hosts/_modules/common/nix.nix).
  hardware.parallels.enable = true;
}
