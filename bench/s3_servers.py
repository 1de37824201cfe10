"""Servers for bench/s3_bench.py: one Garage node, a throwaway PostgreSQL 15 and nginx
round-robin in front of registry replicas, each from /work/shared/design/test-servers.md's
tested recipes. Standard library only."""

import os
import secrets
import shutil
import subprocess
import tempfile
import time

from bench import BenchFailure, Server, clean_env, free_ports, proc_cpu

BUCKET = "registry"
PGBIN = "/usr/lib/postgresql/15/bin"


class Garage:
    """One Garage node with one bucket and one key (test-servers.md, recipe A)."""

    def __init__(self, work, pidfile):
        self.dir = os.path.join(work, "garage")
        os.makedirs(self.dir)
        rpc, s3 = free_ports(2)
        self.config = os.path.join(self.dir, "garage.toml")
        with open(self.config, "w") as f:
            f.write(f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\n'
                    'db_engine = "sqlite"\nreplication_factor = 1\n'
                    'metadata_fsync = false\ndata_fsync = false\n'
                    f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
                    f'rpc_secret = "{secrets.token_hex(32)}"\n[s3_api]\n'
                    f'api_bind_addr = "127.0.0.1:{s3}"\ns3_region = "garage"\n'
                    'root_domain = ".s3.garage.localhost"\n')
        self.access, self.secret = "GK" + secrets.token_hex(12), secrets.token_hex(32)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.http_secret = secrets.token_hex(16)  # one for all replicas, as a cluster needs
        env = {**clean_env(), "RUST_LOG": "garage=warn", "GARAGE_DEFAULT_BUCKET": BUCKET,
               "GARAGE_DEFAULT_ACCESS_KEY": self.access, "GARAGE_DEFAULT_SECRET_KEY": self.secret}
        self.log_path = os.path.join(self.dir, "garage.log")
        self.proc = subprocess.Popen(
            ["garage", "-c", self.config, "server", "--single-node", "--default-bucket"],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"), env=env)
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + 30
        while subprocess.run(["garage", "-c", self.config, "bucket", "info", BUCKET],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"garage did not come up; log:\n{open(self.log_path).read()[-2000:]}")
            time.sleep(0.1)

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def registry_config(garage, root, port, redirect=False, database=None):
    """registry:2's stock config on S3, the same text for wharf and Distribution.
    `database` is (port, dbname) of PostgreSQL, in GitLab's `database:` keys."""
    db = ""
    if database:
        db = ("database:\n  enabled: true\n  host: 127.0.0.1\n"
              f"  port: {database[0]}\n  user: test\n  password: \"\"\n  dbname: {database[1]}\n"
              "  sslmode: disable\n")
    return ("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            "storage:\n  cache:\n    blobdescriptor: inmemory\n  s3:\n"
            f"    accesskey: {garage.access}\n    secretkey: {garage.secret}\n"
            f"    region: garage\n    regionendpoint: {garage.endpoint}\n    bucket: {BUCKET}\n"
            f"    secure: false\n    v4auth: true\n    rootdirectory: {root}\n"
            f"  delete:\n    enabled: true\n  redirect:\n    disable: {str(not redirect).lower()}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: {garage.http_secret}\n{db}")


NGINX = """\
{user}
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream three {{ server 127.0.0.1:{a}; server 127.0.0.1:{b}; server 127.0.0.1:{c}; keepalive 64; }}
    upstream one {{ server 127.0.0.1:{a}; keepalive 64; }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    server {{ listen 127.0.0.1:{p3}; location / {{ proxy_pass http://three; }} }}
    server {{ listen 127.0.0.1:{p1}; location / {{ proxy_pass http://one; }} }}
}}
"""


def start_nginx(ctx, replicas, name="nginx"):
    """nginx round-robin over three replicas (and a second port in front of the first alone)."""
    ndir = os.path.join(ctx.work, name)
    os.makedirs(ndir)
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    p3, p1 = free_ports(2)
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(NGINX.format(user=user, dir=ndir, p3=p3, p1=p1,
                             a=replicas[0].port, b=replicas[1].port, c=replicas[2].port))
    argv = ["nginx", "-p", ndir, "-e", os.path.join(ndir, "error.log"), "-c", os.path.join(ndir, "nginx.conf")]
    nginx = Server(name, name, argv, p3, ctx.work)
    ctx.servers.append(nginx)
    nginx.start(ctx.pidfile)
    nginx.wait_ready()
    one = Server(f"{name}-one", f"{name} to one wharf", argv, p1, ctx.work)
    one.proc = nginx.proc
    return nginx, one


class Postgres:
    """A throwaway PostgreSQL 15 (test-servers.md, section 5)."""

    def __init__(self):
        if not os.path.exists(f"{PGBIN}/initdb"):
            raise BenchFailure(f"{PGBIN}/initdb not found: apt-get install postgresql-15")
        # Its own directory under TMPDIR: the user postgres must reach it, and the bench's
        # work directory may sit in a private (0700) one.
        self.dir = tempfile.mkdtemp(prefix="wharf-s3-bench-pg-")
        self.port = free_ports(1)[0]
        self.running = False
        pre = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.dir, "postgres", "postgres")
            pre = ["runuser", "-u", "postgres", "--"]
        self.pre = pre
        self._run([f"{PGBIN}/initdb", "-D", f"{self.dir}/data", "-U", "test", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self._run([f"{PGBIN}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/pg.log", "-w", "-t", "30", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off", "start"])
        self.running = True

    def createdb(self, name):
        self._run([f"{PGBIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "test", name])

    def _run(self, argv):
        p = subprocess.run(self.pre + argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchFailure(f"{' '.join(argv[:2])} failed: {p.stderr}{p.stdout}")

    def stop(self):
        if self.running:
            self.running = False
            subprocess.run(self.pre + [f"{PGBIN}/pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
