#!/usr/bin/env python3
"""An independent ssh-to-age, for checking labprov's derivation.

Nothing here shares code with the Rust side: OpenSSH key files are parsed by
hand, the ed25519 -> X25519 conversion is libsodium's (PyNaCl), bech32 is the
BIP-173 reference algorithm, and pyrage (rage) reads the results.

Usage:
  ssh_to_age.py [-private-key] [-i FILE]     like ssh-to-age: stdin or FILE, one key
  ssh_to_age.py check BATCH.json             check many keys; exit 1 on any mismatch

BATCH.json is a list of {"private": PATH, "public": PATH, "recipient": "age1...",
"identity": "AGE-SECRET-KEY-1..."} (what the Rust test derived); the check
derives both independently, compares, and round-trips a message with pyrage
in both directions.
"""
import base64
import hashlib
import json
import struct
import sys

from nacl import bindings

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def bech32_encode(hrp, data8):
    # 8-bit bytes to 5-bit groups, padded.
    acc, bits, data5 = 0, 0, []
    for b in data8:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            data5.append((acc >> bits) & 31)
    if bits:
        data5.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = bech32_polymod(expanded + data5 + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data5 + checksum)


def bech32_decode(text):
    text = text.lower()
    hrp, _, rest = text.rpartition("1")
    data5 = [CHARSET.index(c) for c in rest]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if bech32_polymod(expanded + data5) != 1:
        raise ValueError("bad bech32 checksum")
    acc, bits, out = 0, 0, []
    for v in data5[:-6]:
        acc = (acc << 5) | v
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 255)
    return hrp, bytes(out)


def _read_string(buf, off):
    (n,) = struct.unpack(">I", buf[off : off + 4])
    return buf[off + 4 : off + 4 + n], off + 4 + n


def public_from_line(line):
    parts = line.split()
    if parts[0] != "ssh-ed25519":
        raise ValueError("not an ed25519 public key")
    blob = base64.b64decode(parts[1])
    kind, off = _read_string(blob, 0)
    pk, _ = _read_string(blob, off)
    assert kind == b"ssh-ed25519" and len(pk) == 32
    return pk


def private_from_openssh(text):
    """The 64-byte libsodium secret key (seed || public) of an unencrypted key."""
    body = "".join(l for l in text.strip().splitlines() if not l.startswith("-----"))
    raw = base64.b64decode(body)
    magic = b"openssh-key-v1\0"
    assert raw.startswith(magic), "not an openssh-key-v1 file"
    off = len(magic)
    cipher, off = _read_string(raw, off)
    kdf, off = _read_string(raw, off)
    _, off = _read_string(raw, off)  # kdf options
    assert cipher == b"none" and kdf == b"none", "encrypted key"
    (nkeys,) = struct.unpack(">I", raw[off : off + 4])
    off += 4
    assert nkeys == 1
    _, off = _read_string(raw, off)  # public blob
    priv, _ = _read_string(raw, off)
    p = 8  # two check ints
    kind, p = _read_string(priv, p)
    assert kind == b"ssh-ed25519"
    pk, p = _read_string(priv, p)
    sk, p = _read_string(priv, p)
    assert len(sk) == 64 and sk[32:] == pk
    return sk


def recipient_of(pk):
    return bech32_encode("age", bindings.crypto_sign_ed25519_pk_to_curve25519(pk))


def identity_of(sk64):
    # ssh-to-age: SHA-512(seed)[:32], unclamped. libsodium returns it clamped.
    raw = hashlib.sha512(sk64[:32]).digest()[:32]
    clamped = bytearray(raw)
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    assert bytes(clamped) == bindings.crypto_sign_ed25519_sk_to_curve25519(sk64), "libsodium disagrees"
    return bech32_encode("age-secret-key-", raw).upper()


def check(batch_path):
    import pyrage

    batch = json.load(open(batch_path))
    bad = []
    for item in batch:
        pk = public_from_line(open(item["public"]).read())
        sk = private_from_openssh(open(item["private"]).read())
        assert sk[32:] == pk
        recipient, identity = recipient_of(pk), identity_of(sk)
        if recipient != item["recipient"]:
            bad.append(f"{item['public']}: recipient {item['recipient']} != {recipient}")
            continue
        if identity != item["identity"]:
            bad.append(f"{item['private']}: identity differs")
            continue
        # libsodium's public conversion equals X25519(clamped scalar, basepoint).
        _, raw = bech32_decode(identity)
        clamped = bytearray(raw)
        clamped[0] &= 248
        clamped[31] &= 127
        clamped[31] |= 64
        if bindings.crypto_scalarmult_base(bytes(clamped)) != bindings.crypto_sign_ed25519_pk_to_curve25519(pk):
            bad.append(f"{item['private']}: X25519(scalar, 9) != converted public key")
            continue
        r = pyrage.x25519.Recipient.from_str(recipient)
        i = pyrage.x25519.Identity.from_str(identity)
        if str(i.to_public()) != recipient:
            bad.append(f"{item['private']}: pyrage identity.to_public() != recipient")
            continue
        msg = b"independent check " + pk
        if pyrage.decrypt(pyrage.encrypt(msg, [r]), [i]) != msg:
            bad.append(f"{item['private']}: pyrage round trip failed")
    print(json.dumps({"checked": len(batch), "bad": bad}))
    return 1 if bad else 0


def main(argv):
    if argv[:1] == ["check"]:
        return check(argv[1])
    private = "-private-key" in argv
    path = argv[argv.index("-i") + 1] if "-i" in argv else None
    text = open(path).read() if path else sys.stdin.read()
    if private:
        print(identity_of(private_from_openssh(text)))
    else:
        print(recipient_of(public_from_line(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
