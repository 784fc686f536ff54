# Lab administrators. Public material only: SSH public keys (installer and host
# logins), age recipients (every secret and host key is encrypted to them) and
# OpenPGP fingerprints (every secret). The offline recovery key is not an admin:
# its recipient lives in hosts/recovery-age.pub.
{
  ry = {
    description = "Ry";
    # Fill in from your machine: `cat ~/.ssh/id_ed25519.pub`.
    sshKeys = [ ];
    # `age-keygen -y ~/.config/sops/age/keys.txt`, or derive from the SSH key
    # with `labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub`.
    ageRecipients = [ ];
    # Optional: OpenPGP keys that can decrypt every secret with plain `sops`
    # and gpg (not host keys: those are age only). Each fingerprint's public
    # key is committed as hosts/admins/<FINGERPRINT>.asc
    # (`gpg --armor --export FINGERPRINT > hosts/admins/FINGERPRINT.asc`),
    # for example [ "0123456789ABCDEF0123456789ABCDEF01234567" ].
    pgpFingerprints = [ ];
  };
}
