# The UniFi network controller for the lab's access points and switches.
{
  services.unifi = {
    enable = true;
    # Device adoption and discovery ports (the web UI goes through the proxy).
    openFirewall = true;
  };
}
