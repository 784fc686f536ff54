# Prometheus: every service with metrics in the registry is a scrape job
# (node-exporter on every NixOS host among them), and the alert rules (the
# backups' own from lib/services/backup.nix).
{ services, endpoint, backupRules, ... }:
let
  withMetrics = builtins.filter (s: services.${s}.metrics != null) (builtins.attrNames services);

  scrapeConfigs = host: map
    (s:
      let svc = services.${s}; in
      {
        job_name = s;
        metrics_path = svc.metrics.path or "/metrics";
        static_configs = map (h: { targets = [ (endpoint s svc.metrics.port host h) ]; labels.host = h; }) svc.hosts;
      })
    withMetrics;

  rules = {
    groups = [{
      name = "lab";
      rules = [
        {
          alert = "ServiceDown";
          expr = "up == 0";
          "for" = "5m";
          labels.severity = "critical";
          annotations.summary = "{{ $labels.job }} on {{ $labels.host }} has not answered Prometheus for 5 minutes";
        }
        {
          alert = "DiskAlmostFull";
          expr = ''node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs|overlay"} / node_filesystem_size_bytes{fstype!~"tmpfs|ramfs|squashfs|overlay"} < 0.10'';
          "for" = "15m";
          labels.severity = "warning";
          annotations.summary = "{{ $labels.mountpoint }} on {{ $labels.host }} has less than 10% free";
        }
        {
          alert = "UnitFailed";
          expr = ''node_systemd_unit_state{state="failed"} == 1'';
          "for" = "5m";
          labels.severity = "warning";
          annotations.summary = "{{ $labels.name }} failed on {{ $labels.host }}";
        }
        {
          # The backups' metrics come from node exporter's textfile collector.
          alert = "TextfileUnreadable";
          expr = "node_textfile_scrape_error == 1";
          "for" = "15m";
          labels.severity = "warning";
          annotations.summary = "node exporter on {{ $labels.host }} cannot read a metrics file (backup metrics may be missing)";
        }
      ] ++ backupRules;
    }];
  };
in
{
  prometheus = host: {
    scrapeConfigs = scrapeConfigs host;
    inherit rules;
    # The whole prometheus.yml as the NixOS module writes it from
    # scrapeConfigs and ruleFiles (the rules beside it, as rendered).
    config = {
      global = { scrape_interval = "30s"; evaluation_interval = "30s"; };
      rule_files = [ "prometheus-rules.yml" ];
      scrape_configs = scrapeConfigs host;
    };
  };
}
