// Customization options as operators write them (--ip, --dhcp, --hostname)
// and the ifupdown rewrite: the machine's own stanza replaces the template's,
// nothing else in the file changes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkCustomization, dropStanzas, parseIpOption } from '../../src/customize/identity.js';
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
    const block = { hostname: 'web-01', ip: ['eth0=192.0.2.7/24,gw=192.0.2.1'], newIdentity: true, timezone: 'Europe/Berlin', sshAuthorizedKey: { user: 'root', keys: [ED25519] } };
    assert.deepEqual(convert(block), []);
    const c = customizationFromSpec(block)!;
    assert.equal(c.ip![0].gateway, '192.0.2.1');
    assert.deepEqual(customizationToSpec(c), block);
    assert.equal(customizationFromSpec({}), undefined, 'an empty block asks for nothing');
  });

  it('names every bad field', () => {
    const errors = convert({ hostname: 'bad_name', ip: ['eth0=300.1.1.1/24'], newIdentity: 'yes', timezone: '../x', sshAuthorizedKey: { user: 'root', keys: ['nope'] }, colour: 'red' });
    const fields = errors.map(e => e.field).sort();
    assert.deepEqual(fields, ['customize', 'customize.colour', 'customize.ip', 'customize.newIdentity', 'customize.sshAuthorizedKey.keys', 'customize.timezone'], JSON.stringify(errors));
  });
});
