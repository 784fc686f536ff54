# IPv4 arithmetic for the registry's checks and the reverse zone, in builtins
# only.
rec {
  # "192.168.1.10" -> [ 192 168 1 10 ], or null when it is not an IPv4 address.
  octets = address:
    let
      m = builtins.match "([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})" address;
      parts = if m == null then [ ] else map builtins.fromJSON m;
    in
    if m != null && builtins.all (o: o <= 255) parts then parts else null;

  toInt = os: builtins.foldl' (acc: o: acc * 256 + o) 0 os;

  pow2 = n: builtins.foldl' (acc: _: acc * 2) 1 (builtins.genList (x: x) n);

  # "192.168.1.0/24" -> { octets; prefixLength; }, or null when malformed.
  parseCidr = cidr:
    let
      m = builtins.match "([0-9.]+)/([0-9]{1,2})" cidr;
      os = if m == null then null else octets (builtins.head m);
      len = if m == null then 0 else builtins.fromJSON (builtins.elemAt m 1);
    in
    if os == null || len > 32 then null else { octets = os; prefixLength = len; };

  # Whether an address lies in a parsed subnet.
  contains = subnet: address:
    let
      os = octets address;
      size = pow2 (32 - subnet.prefixLength);
    in
    os != null && toInt os / size == toInt subnet.octets / size;

  # The reverse zone of an octet-aligned subnet: 192.168.1.0/24 ->
  # "1.168.192.in-addr.arpa".
  reverseZone = subnet:
    let kept = builtins.genList (i: builtins.elemAt subnet.octets i) (subnet.prefixLength / 8); in
    builtins.concatStringsSep "." (map toString (reverseList kept)) + ".in-addr.arpa";

  # An address's name inside its reverse zone: the octets beyond the prefix,
  # most specific first (192.168.1.10 in a /24 -> "10").
  reverseLabel = subnet: address:
    let
      os = octets address;
      skip = subnet.prefixLength / 8;
      rest = builtins.genList (i: builtins.elemAt os (skip + i)) (4 - skip);
    in
    builtins.concatStringsSep "." (map toString (reverseList rest));

  reverseList = list: builtins.genList (i: builtins.elemAt list (builtins.length list - 1 - i)) (builtins.length list);
}
