# The service registry: what runs where, pure data (builtins only), so that
#   nix eval --json -f hosts/services.nix
# reads it in milliseconds without nixpkgs. lib/services derives everything
# else from it and from the host facts: the DNS zone and reverse zone, the
# resolvers' and proxies' configuration, firewall ports, Prometheus targets,
# the status page and the health checks deploys run. docs/services.md is the
# map and says how to add a service.
#
# A service:
#   host      the host it runs on (hosts/<host>), or "*" for every NixOS host
#   daemon    which renderer and NixOS module runs it (default: its name)
#   unit      its systemd unit, checked on the host after a deploy
#   ports.<purpose> = {
#     port      number (with `last`, the range port..last)
#     protocol  "tcp", "udp" or "dns" (both; default "tcp")
#     bind      "loopback" (default) or "lan" (the host's address and loopback)
#     open      open it in the host's firewall (default false; needs bind = "lan")
#   }
#   metrics   the port (by purpose) and path Prometheus scrapes
#   health    what answers when the service is up: { port; dns = NAME; } asks
#             for NAME over DNS, { port; http = PATH; } expects a 2xx/3xx
#   names     extra DNS names (in the lab domain) for the service's host
#   backup    its state, backed up with restic to every repository of the
#             host (lib/services/backup.nix; docs/operations.md, "Backups"):
#     paths     absolute paths (each must exist on the host, or the backup
#               fails before restic runs)
#     exclude   restic exclude patterns (default none)
#     stop      stop the unit while restic reads (default false; a
#               controller's own scheduled export needs no stop)
#     checks    what the restore test checks beyond files and sizes:
#               sqlite = [ DB... ] (PRAGMA integrity_check),
#               tsdb = [ DIR... ] (promtool tsdb list)
#   container run as a Podman container: { image (pinned by digest);
#             volumes = [ { name; path; } ]; environment }
#
# A route publishes a service through a proxy under NAME.<domain>:
#   via       "caddy" (HTTPS with the internal CA) or "haproxy" (TCP, with
#             tls = true TLS terminated, balanced over health-checked backends)
#   to        the services behind it (with haproxy, several)
#   port      their port, by purpose
#   scheme    what the backend speaks ("http" or "https"; caddy only)
#   auth      true: Caddy asks for the lab's admin password (the backend has
#             no login of its own)
#   listen    haproxy only: which of haproxy's ports (by purpose) it listens on
{
  services = {
    # --- DNS: clients ask dnsdist; the lab zone goes to BIND, the rest to
    # the filtering resolvers (docs/services.md, "The DNS chain").
    bind = {
      host = "luna";
      unit = "bind.service";
      # nixpi's resolver forwards the lab zone here, so it listens on the LAN.
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
      # Query log and statistics (its settings come from the registry). The
      # module runs it with DynamicUser, so /var/lib/AdGuardHome is only a
      # symlink (restic would save the link): the data is in /var/lib/private.
      # The rotated-out query log is left behind; it is stopped for the
      # backup (its statistics are a bbolt database), dnsdist asks blocky.
      backup = {
        paths = [ "/var/lib/private/AdGuardHome" ];
        exclude = [ "/var/lib/private/AdGuardHome/data/querylog.json.1" ];
        stop = true;
      };
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
    # The second resolver, on other hardware: clients get it as their second
    # DNS server, and dnsdist on luna uses it when luna's own are down.
    blocky-nixpi = {
      host = "nixpi";
      daemon = "blocky";
      unit = "blocky.service";
      ports.dns = { port = 53; protocol = "dns"; bind = "lan"; open = true; };
      ports.metrics = { port = 4000; bind = "lan"; open = true; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "dns"; dns = "luna"; };
    };

    # --- Proxies.
    caddy = {
      host = "luna";
      unit = "caddy.service";
      ports.http = { port = 80; bind = "lan"; open = true; };
      ports.https = { port = 443; bind = "lan"; open = true; };
      # Its admin API (reloads), on loopback.
      ports.admin = { port = 2019; };
      # Port 80 answers every name with a redirect to HTTPS.
      health = { port = "http"; http = "/"; };
    };
    haproxy = {
      host = "luna";
      unit = "haproxy.service";
      ports.dot = { port = 853; bind = "lan"; open = true; };
      ports.metrics = { port = 8404; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "metrics"; http = "/metrics"; };
    };
    nginx = {
      host = "luna";
      unit = "nginx.service";
      ports.http = { port = 8081; };
      health = { port = "http"; http = "/"; };
    };

    # --- Monitoring.
    prometheus = {
      host = "luna";
      unit = "prometheus.service";
      ports.web = { port = 9090; };
      metrics = { port = "web"; path = "/metrics"; };
      # Stopped while restic reads, so the TSDB (blocks and write-ahead log)
      # is consistent; scrapes pause for the backup's minutes.
      backup = {
        paths = [ "/var/lib/prometheus2" ];
        stop = true;
        checks.tsdb = [ "/var/lib/prometheus2/data" ];
      };
      health = { port = "web"; http = "/-/healthy"; };
    };
    node-exporter = {
      host = "*";
      unit = "prometheus-node-exporter.service";
      ports.metrics = { port = 9100; bind = "lan"; open = true; };
      metrics = { port = "metrics"; path = "/metrics"; };
      health = { port = "metrics"; http = "/metrics"; };
    };
    glances = {
      host = "luna";
      unit = "glances.service";
      ports.web = { port = 61208; };
      health = { port = "web"; http = "/"; };
    };

    # --- Network controllers. Both run on luna, so every port either binds
    # is listed (their databases on loopback too): the registry refuses two
    # services on one port. UniFi's are written into its system.properties
    # from here (its guest portal moved off 8843, Omada's).
    unifi = {
      host = "luna";
      unit = "unifi.service";
      # The web UI is proxied; devices reach the controller directly.
      ports.web = { port = 8443; };
      ports.inform = { port = 8080; bind = "lan"; open = true; };
      ports.stun = { port = 3478; protocol = "udp"; bind = "lan"; open = true; };
      ports.discovery = { port = 10001; protocol = "udp"; bind = "lan"; open = true; };
      ports.portal-http = { port = 8881; bind = "lan"; open = true; };
      ports.portal-https = { port = 8844; bind = "lan"; open = true; };
      ports.speedtest = { port = 6789; bind = "lan"; };
      ports.db = { port = 27117; };
      # UniFi writes its scheduled backups (Settings, System, Backups) here.
      # Its own exports are consistent; its live database is not backed up.
      backup.paths = [ "/var/lib/unifi/data/backup" ];
    };
    # nixpkgs' own module (services.omada, x86_64 only); its ports are the
    # package's defaults, so they are stated here as they are.
    omada = {
      host = "luna";
      unit = "omada.service";
      # Open on the LAN as well as proxied: devices download firmware from the
      # controller's HTTPS port (Omada 6.1 and later).
      ports.web = { port = 8043; bind = "lan"; open = true; };
      ports.db = { port = 27217; };
      # The controller's HTTP port serves the management redirect and the
      # guest portal alike.
      ports.http = { port = 8088; bind = "lan"; open = true; };
      ports.portal-https = { port = 8843; bind = "lan"; open = true; };
      ports.discovery = { port = 29810; protocol = "udp"; bind = "lan"; open = true; };
      ports.discovery-v1 = { port = 19810; protocol = "udp"; bind = "lan"; open = true; };
      ports.app-discovery = { port = 27001; protocol = "udp"; bind = "lan"; open = true; };
      ports.devices = { port = 29811; last = 29817; bind = "lan"; open = true; };
      # Omada's automatic backups (Settings, Maintenance, Backup) land here.
      backup.paths = [ "/var/lib/omada/data/autobackup" ];
    };

    # --- Containers (Podman). Uptime Kuma watches the lab from the outside
    # in (its own login); it runs from upstream's image, pinned by digest,
    # on its own network with its state in a volume.
    uptime-kuma = {
      host = "luna";
      unit = "podman-uptime-kuma.service";
      ports.web = { port = 3001; };
      health = { port = "web"; http = "/"; };
      container = {
        # 1.23.16, the digest as pulled by digest in two public
        # configurations (docs/services.md); re-check with
        # `skopeo inspect docker://docker.io/louislam/uptime-kuma:1.23.16`.
        image = "docker.io/louislam/uptime-kuma:1.23.16@sha256:b4c3a4d186b4612b3a7bbb39c56a634626276615c21871c837a86e4a43d8e047";
        volumes = [{ name = "data"; path = "/app/data"; }];
      };
      # Its volume (Podman's place for uptime-kuma-data), with the SQLite
      # database of monitors and history, stopped so the file is whole.
      backup = {
        paths = [ "/var/lib/containers/storage/volumes/uptime-kuma-data/_data" ];
        stop = true;
        checks.sqlite = [ "/var/lib/containers/storage/volumes/uptime-kuma-data/_data/kuma.db" ];
      };
    };
  };

  routes = {
    unifi = { via = "caddy"; to = [ "unifi" ]; port = "web"; scheme = "https"; };
    omada = { via = "caddy"; to = [ "omada" ]; port = "web"; scheme = "https"; };
    uptime = { via = "caddy"; to = [ "uptime-kuma" ]; port = "web"; scheme = "http"; };
    adguard = { via = "caddy"; to = [ "adguardhome" ]; port = "web"; scheme = "http"; auth = true; };
    prometheus = { via = "caddy"; to = [ "prometheus" ]; port = "web"; scheme = "http"; auth = true; };
    glances = { via = "caddy"; to = [ "glances" ]; port = "web"; scheme = "http"; auth = true; };
    status = { via = "caddy"; to = [ "nginx" ]; port = "http"; scheme = "http"; };
    # DNS over TLS for laptops away from the LAN resolver's reach: HAProxy
    # terminates TLS and balances over the two resolvers' TCP ports.
    dot = { via = "haproxy"; to = [ "dnsdist" "blocky-nixpi" ]; port = "dns"; listen = "dot"; tls = true; };
  };
}
