# nixpi: Raspberry Pi 4 at the edge, born from `labimg build nixpi`.
{ config, ... }:
{
  imports = [
    ../_modules/boards/raspberry-pi-4.nix
  ];

  # Boot the layout labimg writes, with the labels from the host facts.
  homelab.sdCard = {
    enable = true;
    inherit (config.homelab.facts) image;
  };

  # labimg injects the pinned host key; if a card was flashed without one,
  # the Pi makes its own and shows it for `labprov enrol nixpi`.
  homelab.enrolment.enable = true;

  assertions = [
    {
      assertion = config.homelab.facts.board == "rpi4";
      message = "hosts/nixpi/configuration.nix imports the Raspberry Pi 4 module, but the facts say board = ${config.homelab.facts.board}: change one of them.";
    }
  ];

  # 4 GiB of RAM and an SD card: swap in RAM, not on the card.
  zramSwap.enable = true;

  homelab.homeStateVersion = "26.05";
  system.stateVersion = "26.05";
}
