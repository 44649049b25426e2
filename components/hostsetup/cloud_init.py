"""The droplets' cloud-init user data: constant, so it never replaces a droplet."""

from __future__ import annotations

from components.hostsetup.delivery import DEPLOY_USER



def render_cloud_init(deploy_user: str = DEPLOY_USER) -> str:
    """Constant user data: it never changes per deploy, so it never replaces a droplet.

    The provider installs the droplet's SSH keys for root before ``runcmd``; they are copied to
    the deploy user, and root and password logins are closed in the same boot.
    """
    document = {
        "users": [{
            "name": deploy_user,
            "groups": ["sudo"],
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
        }],
        "ssh_pwauth": False,
        "disable_root": False,
        "write_files": [{
            "path": "/etc/ssh/sshd_config.d/01-platform-bootstrap.conf",
            "permissions": "0644",
            "content": "PermitRootLogin no\nPasswordAuthentication no\n",
        }],
        "runcmd": [
            ["install", "-d", "-m", "700", "-o", deploy_user, "-g", deploy_user,
             f"/home/{deploy_user}/.ssh"],
            ["install", "-m", "600", "-o", deploy_user, "-g", deploy_user,
             "/root/.ssh/authorized_keys", f"/home/{deploy_user}/.ssh/authorized_keys"],
            ["systemctl", "reload", "ssh"],
        ],
    }
    import yaml

    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
