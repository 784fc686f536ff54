# The deploy test's registry (tests/deploy/run copies it to the test lab's
# hosts/services.nix): the shape of hosts/services.nix, cut to the DNS chain
# the test can run for real (BIND, dnsdist) or in stand-ins (Blocky and
# AdGuard Home, neither packaged for Debian). luna's real registry also names
# UniFi, Omada, Podman and the rest, which nothing here can run.
{
  services = {
    bind = {
      host = "luna";
      unit = "bind.service";
      ports.dns = { port = 5300; protocol = "dns"; bind = "lan"; open = true; };
      health = { port = "dns"; dns = "luna"; };
    };
    blocky = {
      host = "luna";
      unit = "blocky.service";
      ports.dns = { port = 5301; protocol = "dns"; };
      ports.metrics = { port = 4000; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "dns"; dns = "luna"; };
    };
    adguardhome = {
      host = "luna";
      unit = "adguardhome.service";
      ports.dns = { port = 5302; protocol = "dns"; };
      ports.web = { port = 3000; };
      health = { port = "dns"; dns = "luna"; };
    };
    dnsdist = {
      host = "luna";
      unit = "dnsdist.service";
      ports.dns = { port = 53; protocol = "dns"; bind = "lan"; open = true; };
      ports.metrics = { port = 8083; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "dns"; dns = "luna"; };
      names = [ "dns" ];
    };
    blocky-nixpi = {
      host = "nixpi";
      daemon = "blocky";
      unit = "blocky.service";
      ports.dns = { port = 53; protocol = "dns"; bind = "lan"; open = true; };
      ports.metrics = { port = 4000; bind = "lan"; open = true; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "dns"; dns = "luna"; };
    };
  };
}
