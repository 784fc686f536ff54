# Lab administrators. Public material only: SSH public keys (installer and host
# logins) and age recipients (every secret is encrypted to them).
{
  ry = {
    description = "Ry";
    # Fill in from your machine: `cat ~/.ssh/id_ed25519.pub`.
    sshKeys = [ ];
    # `age-keygen -y ~/.config/sops/age/keys.txt`, or derive from the SSH key
    # with `labprov keys derive --ssh-key ~/.ssh/id_ed25519.pub`.
    ageRecipients = [ ];
  };
}
