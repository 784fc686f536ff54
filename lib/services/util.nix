# The few list and attribute-set helpers lib/services needs, in builtins only
# (the registry and its renderers evaluate with plain Nix, without nixpkgs).
rec {
  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
  lines = list: builtins.concatStringsSep "\n" list + "\n";
  mapAttrsToList = f: set: map (name: f name set.${name}) (builtins.attrNames set);
  filterAttrs = pred: set: builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
    (builtins.filter (name: pred name set.${name}) (builtins.attrNames set)));
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  unique = list: builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ] list;
  # Every element that occurs more than once, once.
  duplicates = list: unique (builtins.filter (x: builtins.length (builtins.filter (y: y == x) list) > 1) list);
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: list: if cond then list else [ ];
  optionalAttrs = cond: set: if cond then set else { };
  indent = prefix: text: builtins.concatStringsSep "\n"
    (map (line: if line == "" then "" else prefix + line) (builtins.filter builtins.isString (builtins.split "\n" text)));
  # Pads a string on the right to width n (for aligned zone files and tables).
  padRight = n: s:
    let len = builtins.stringLength s; in
    if len >= n then s else s + builtins.concatStringsSep "" (builtins.genList (_: " ") (n - len));
  # A registry port as the map and the status page show it: "53/dns open",
  # "8088-8090/tcp lan" (the LAN address, closed), "9090/tcp" (loopback).
  portText = p: "${toString p.port}${if p.last != p.port then "-${toString p.last}" else ""}/${p.protocol}"
    + (if p.bind == "lan" then (if p.open then " open" else " lan") else "");
}
