// Customization options as operators write them (--ip, --dhcp, --hostname)
// and the ifupdown rewrite: the machine's own stanza replaces the template's,
// nothing else in the file changes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { checkCustomization, customizeLinux, dropStanzas, parseIpOption } from '../../src/customize/identity.js';
import { networkKind } from '../../src/customize/network.js';
import { GuestFs } from '../../src/inspect/guest-fs.js';
import { FerryError } from '../../src/errors.js';
import { checkTimezoneName, isPublicKeyLine } from '../../src/customize/linux.js';
import { customizationFromSpec, customizationToSpec } from '../../src/customize/spec.js';
import { validateSpec } from '../../src/jobs/spec.js';

const usage = (f: () => unknown, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof FerryError && e.exitCode === 2 && re.test(e.message));

describe('--ip, --dhcp, --hostname', () => {
  it('reads IF=CIDR with a gateway and DNS servers', () => {
    assert.deepEqual(parseIpOption('enp0s2=10.234.0.50/24,gw=10.234.0.1,dns=10.234.0.1,dns=9.9.9.9'),
      { iface: 'enp0s2', address: '10.234.0.50', prefix: 24, gateway: '10.234.0.1', dns: ['10.234.0.1', '9.9.9.9'] });
    assert.deepEqual(parseIpOption('eth0=192.0.2.7/32'), { iface: 'eth0', address: '192.0.2.7', prefix: 32, dns: [] });
  });

  it('refuses what is not an address, a prefix or a known key, naming the option', () => {
    usage(() => parseIpOption('eth0'), /--ip eth0: write it as IF=ADDRESS\/PREFIX/);
    usage(() => parseIpOption('eth0=10.0.0.300/24'), /not an IPv4 address with a prefix/);
    usage(() => parseIpOption('eth0=10.0.0.3'), /not an IPv4 address with a prefix/);
    usage(() => parseIpOption('eth0=10.0.0.3/33'), /not an IPv4 address with a prefix/);
    usage(() => parseIpOption('eth0=10.0.0.3/24,gw=nope'), /gw=nope is not an IPv4 address/);
    usage(() => parseIpOption('eth0=10.0.0.3/24,mtu=9000'), /unknown key mtu/);
    usage(() => parseIpOption('bad name=10.0.0.3/24'), /not an interface name/);
  });

  it('refuses a bad hostname and an interface given both an address and DHCP', () => {
    usage(() => checkCustomization({ hostname: 'under_score' }), /--hostname under_score/);
    usage(() => checkCustomization({ hostname: '-lead' }), /--hostname -lead/);
    checkCustomization({ hostname: 'web-01.example.org' });
    usage(() => checkCustomization({ ip: [parseIpOption('eth0=10.0.0.3/24')], dhcp: ['eth0'] }), /both --ip and --dhcp/);
  });
});

describe('ifupdown: the interfaces file without the stanzas being replaced', () => {
  const file = ['# managed by the template', 'source /etc/network/interfaces.d/*', '', 'auto lo', 'iface lo inet loopback', '',
    'allow-hotplug ens3', 'iface ens3 inet static', '    address 10.0.2.15/24', '    gateway 10.0.2.2', '',
    'auto eth1 ens3', 'iface eth1 inet dhcp', ''].join('\n');

  it('drops the stanza of a replaced interface and its auto/allow lines, keeps everything else', () => {
    const out = dropStanzas(file, ['ens3']);
    assert.ok(!/ens3|10\.0\.2\./.test(out), out);
    for (const kept of ['# managed by the template', 'source /etc/network/interfaces.d/*', 'auto lo', 'iface lo inet loopback', 'auto eth1', 'iface eth1 inet dhcp']) {
      assert.ok(out.split('\n').includes(kept), `kept: ${kept}\n${out}`);
    }
  });

  it('leaves the file as it was when no interface is replaced', () => {
    assert.equal(dropStanzas(file, []), file);
    assert.equal(dropStanzas(file, ['enp9s0']), file);
  });
});

// a real ed25519 public key (ssh-keygen output), and look-alikes
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmWw5eJtKJ4rXhT0m7o3bS9QeS0Qn4m5rXq3q8l2c1h op@host';

describe('--ssh-authorized-key, --timezone', () => {
  it('takes an OpenSSH public key line and refuses text that only looks like one', () => {
    assert.ok(isPublicKeyLine(ED25519));
    assert.ok(!isPublicKeyLine('ssh-ed25519 notbase64!! op@host'));
    assert.ok(!isPublicKeyLine('ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDmWw5eJtKJ4rXhT0m7o3bS9QeS0Qn4m5rXq3q8l2c1h'), 'the blob names another type');
    assert.ok(!isPublicKeyLine('-----BEGIN OPENSSH PRIVATE KEY-----'));
  });

  it('refuses a zone name that is not one (or climbs out of zoneinfo)', () => {
    checkTimezoneName('Europe/Berlin');
    checkTimezoneName('UTC');
    checkTimezoneName('Etc/GMT+5');
    usage(() => checkTimezoneName('../../etc/passwd'), /--timezone/);
    usage(() => checkTimezoneName('Europe/Ber lin'), /--timezone/);
  });
});

describe('the customize block of a job spec', () => {
  const convert = (customize: unknown) => validateSpec({ source: '/a.raw', target: '/b.qcow2', customize });

  it('is accepted in a conversion, and round-trips with the command line form', () => {
    const block = { hostname: 'web-01', ip: ['eth0=192.0.2.7/24,gw=192.0.2.1'], newIdentity: true, timezone: 'Europe/Berlin', sshAuthorizedKey: { user: 'root', keys: [ED25519] },
      domainJoin: 'corp.example,ou=OU=Servers,DC=corp,DC=example,user=CORP\\joiner,password-file=/root/join.pw', run: ['hello@1', 'cleanup'] };
    assert.deepEqual(convert(block), []);
    const c = customizationFromSpec(block)!;
    assert.equal(c.ip![0].gateway, '192.0.2.1');
    assert.deepEqual(customizationToSpec(c), block);
    assert.equal(customizationFromSpec({}), undefined, 'an empty block asks for nothing');
  });

  it('names every bad field', () => {
    const errors = convert({ hostname: 'bad_name', ip: ['eth0=300.1.1.1/24'], newIdentity: 'yes', timezone: '../x', sshAuthorizedKey: { user: 'root', keys: ['nope'] }, colour: 'red',
      domainJoin: 'corp.example,user=CORP\\joiner', run: ['two@at@signs'] });
    const fields = errors.map(e => e.field).sort();
    assert.deepEqual(fields, ['customize', 'customize.colour', 'customize.domainJoin', 'customize.ip', 'customize.newIdentity', 'customize.run', 'customize.sshAuthorizedKey.keys', 'customize.timezone'], JSON.stringify(errors));
  });
});

// customizeLinux on small guest trees in a temp dir (a GuestFs over a plain directory): what each network flavour gets
describe('the network configuration each guest flavour uses', () => {
  const ip = [parseIpOption('eth0=192.0.2.7/24,gw=192.0.2.1,dns=192.0.2.53')];
  const tree = async (files: Record<string, string>) => {
    const root = await mkdtemp(join(tmpdir(), 'ferry-unit-'));
    for (const [p, text] of Object.entries(files)) {
      await mkdir(p.endsWith('/') ? join(root, p) : dirname(join(root, p)), { recursive: true });
      if (!p.endsWith('/')) await writeFile(join(root, p), text);
    }
    return { root, fs: new GuestFs([{ mountpoint: '/', dir: root }]) };
  };
  const read = (root: string, p: string) => readFile(join(root, p), 'utf8');

  it('netplan: the interface leaves the template\'s file and gets its own', async () => {
    const { root, fs } = await tree({ 'etc/netplan/50-cloud-init.yaml': '# from the template\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.5/24]\n    eth1:\n      dhcp4: true\n' });
    try {
      assert.equal(await networkKind(fs), 'netplan');
      const changes = await customizeLinux(fs, { ip });
      const old = await read(root, 'etc/netplan/50-cloud-init.yaml');
      assert.doesNotMatch(old, /eth0|10\.0\.0\.5/);
      assert.match(old, /# from the template[\s\S]*eth1:\n\s+dhcp4: true/);
      const mine = await read(root, 'etc/netplan/90-ferry-eth0.yaml');
      assert.match(mine, /eth0:\n\s+dhcp4: false\n\s+addresses: \[192\.0\.2\.7\/24\]\n\s+routes:\n\s+- to: default\n\s+via: 192\.0\.2\.1\n\s+nameservers:\n\s+addresses: \[192\.0\.2\.53\]/);
      assert.deepEqual(changes.map(c => c.file).sort(), ['/etc/netplan/50-cloud-init.yaml', '/etc/netplan/90-ferry-eth0.yaml']);
    } finally { await rm(root, { recursive: true }); }
  });

  it('NetworkManager: a keyfile profile for the interface, 0600', async () => {
    const { root, fs } = await tree({ 'etc/NetworkManager/system-connections/': '', 'usr/sbin/NetworkManager': '' });
    try {
      assert.equal(await networkKind(fs), 'networkmanager');
      await customizeLinux(fs, { ip, dhcp: ['eth1'] });
      const f = join(root, 'etc/NetworkManager/system-connections/ferry-eth0.nmconnection');
      assert.match(await readFile(f, 'utf8'), /interface-name=eth0[\s\S]*\[ipv4\]\nmethod=manual\naddress1=192\.0\.2\.7\/24,192\.0\.2\.1\ndns=192\.0\.2\.53;/);
      assert.equal((await stat(f)).mode & 0o777, 0o600);
      assert.match(await read(root, 'etc/NetworkManager/system-connections/ferry-eth1.nmconnection'), /\[ipv4\]\nmethod=auto/);
    } finally { await rm(root, { recursive: true }); }
  });

  it('ifcfg: the address keys replaced, the others (HWADDR, NAME) kept', async () => {
    const { root, fs } = await tree({ 'etc/sysconfig/network-scripts/ifcfg-eth0': 'DEVICE=eth0\nNAME=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp\nONBOOT=yes\n' });
    try {
      assert.equal(await networkKind(fs), 'ifcfg');
      await customizeLinux(fs, { ip });
      assert.equal(await read(root, 'etc/sysconfig/network-scripts/ifcfg-eth0'),
        'DEVICE=eth0\nNAME=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=none\nONBOOT=yes\nIPADDR=192.0.2.7\nPREFIX=24\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\n');
    } finally { await rm(root, { recursive: true }); }
  });

  it('--new-identity and --ssh-authorized-key on a tree: keys, seed and leases gone, the key owned by the user', async () => {
    const { root, fs } = await tree({
      'etc/machine-id': '0123456789abcdef0123456789abcdef\n', 'var/lib/dbus/machine-id': '0123456789abcdef0123456789abcdef\n',
      'etc/ssh/sshd_config': '', 'etc/ssh/ssh_host_ed25519_key': 'secret', 'etc/ssh/ssh_host_ed25519_key.pub': 'pub', 'etc/systemd/system/': '',
      'var/lib/systemd/random-seed': 'x', 'var/lib/dhcp/dhclient.eth0.leases': 'lease', 'etc/udev/rules.d/70-persistent-net.rules': 'rule',
      'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\nop:x:1234:1235::/home/op:/bin/sh\n', 'home/op/': '',
    });
    try {
      const changes = await customizeLinux(fs, { newIdentity: true, authorizedKey: { user: 'op', file: 'k.pub', keys: [ED25519] } });
      assert.equal(await read(root, 'etc/machine-id'), '');
      for (const gone of ['var/lib/dbus/machine-id', 'etc/ssh/ssh_host_ed25519_key', 'etc/ssh/ssh_host_ed25519_key.pub', 'var/lib/systemd/random-seed', 'var/lib/dhcp/dhclient.eth0.leases', 'etc/udev/rules.d/70-persistent-net.rules']) {
        assert.equal(await stat(join(root, gone)).catch(() => undefined), undefined, gone);
      }
      assert.match(await read(root, 'etc/systemd/system/ferry-ssh-hostkeys.service'), /ExecStart=\/usr\/bin\/ssh-keygen -A/);
      const ak = join(root, 'home/op/.ssh/authorized_keys');
      assert.equal(await readFile(ak, 'utf8'), `${ED25519}\n`);
      const st = await stat(ak);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [1234, 1235, 0o600]);
      assert.ok(!JSON.stringify(changes).includes('secret'), 'a private key never reaches the report');
      await assert.rejects(customizeLinux(fs, { authorizedKey: { user: 'nobody', file: 'k.pub', keys: [ED25519] } }), (e: unknown) => e instanceof FerryError && e.code === 'CUSTOMIZE_UNKNOWN_USER');
    } finally { await rm(root, { recursive: true }); }
  });
});
