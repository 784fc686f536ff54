# Raspberry Pi 4 at the edge: born from an SD image (`labimg build nixpi`).
{
  system = "aarch64-linux";
  class = "nixos";
  role = "edge / IoT";
  board = "rpi4";
  address = "192.168.1.40";
  # SD image layout, as NixOS's sd-image module lays it out. Omitted fields
  # take labimg's defaults (the values shown here).
  image = {
    gapMiB = 8;
    firmwareSizeMiB = 30;
    firmwareLabel = "FIRMWARE";
    rootLabel = "NIXOS_SD";
    # Free space left in the root filesystem beyond its content; the first
    # boot grows the partition to the whole card anyway.
    rootHeadroomMiB = 256;
  };
}
