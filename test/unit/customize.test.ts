// Customization options as operators write them (--ip, --dhcp, --hostname)
// and the ifupdown rewrite: the machine's own stanza replaces the template's,
// nothing else in the file changes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkCustomization, dropStanzas, parseIpOption } from '../../src/customize/identity.js';
import { FerryError } from '../../src/errors.js';

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
