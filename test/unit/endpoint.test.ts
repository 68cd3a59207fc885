import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEndpoint, describeEndpoint } from '../../src/sources/endpoint.js';
import { formatFor, parseSize } from '../../src/convert/options.js';

describe('endpoints, sizes and formats', () => {
  it('parses paths, nbd and iscsi URLs', () => {
    assert.deepEqual(parseEndpoint('/tmp/a.qcow2'), { kind: 'file', path: '/tmp/a.qcow2' });
    const n = parseEndpoint('nbd://host:10810/disk0');
    assert.equal(n.kind, 'nbd');
    assert.equal(n.kind === 'nbd' && n.port, 10810);
    const u = parseEndpoint('nbd+unix:///disk0?socket=/run/x.sock');
    assert.equal(u.kind === 'nbd' && u.socket, '/run/x.sock');
    const i = parseEndpoint('iscsi://admin@10.0.0.1/iqn.2026-11.io.ferry:disk/1');
    assert.ok(i.kind === 'iscsi' && i.iqn === 'iqn.2026-11.io.ferry:disk' && i.lun === 1 && i.user === 'admin' && i.port === 3260);
    assert.equal(describeEndpoint(i), 'iscsi://10.0.0.1/iqn.2026-11.io.ferry:disk/1', 'no user name in messages');
    assert.throws(() => parseEndpoint('iscsi://host/only-iqn'), /iscsi:\/\/\[USER@\]HOST/);
    assert.throws(() => parseEndpoint('ftp://x/y'), /unknown scheme/);
  });

  it('reads sizes in binary units', () => {
    assert.equal(parseSize('8G'), 8 * 2 ** 30);
    assert.equal(parseSize('512M'), 512 * 2 ** 20);
    assert.equal(parseSize('1.5G'), 1.5 * 2 ** 30);
    assert.equal(parseSize('4096'), 4096);
    assert.throws(() => parseSize('big'), /cannot read size/);
  });

  it('takes the format from --format, then the extension, then qcow2', () => {
    assert.equal(formatFor('/x/a.vmdk'), 'vmdk');
    assert.equal(formatFor('/x/a.img'), 'raw');
    assert.equal(formatFor('/x/a.disk'), 'qcow2');
    assert.equal(formatFor('/x/a.disk', 'vhdx'), 'vhdx');
    assert.throws(() => formatFor('/x/a', 'vhd'), /not supported/);
  });
});
