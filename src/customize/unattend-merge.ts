// An answer file the guest already has (Panther\unattend.xml: a template's own
// settings, often its product key, locale, accounts, first-logon commands) is
// kept: Ferry's settings go into it instead of replacing it. Per pass, per
// component (name + architecture): an element Ferry writes replaces the
// same-named one there, a group (OOBE) is merged element by element, and
// Identification, one decision (join a domain or a workgroup), is replaced
// whole. Every other pass, component, element and comment stays.
//
// Python's ElementTree does the XML (python3 is a Ferry dependency,
// scripts/setup.sh): it reads any encoding the file declares, and its expat
// refuses entity expansion bombs.
import { FerryError } from '../errors.js';
import { run } from '../util/exec.js';

const MERGE_PY = String.raw`
import base64, json, sys
import xml.etree.ElementTree as ET
NS = 'urn:schemas-microsoft-com:unattend'
ET.register_namespace('', NS)
ET.register_namespace('wcm', 'http://schemas.microsoft.com/WMIConfig/2002/State')
q = lambda t: '{%s}%s' % (NS, t)
WHOLE = {q('Identification')}
d = json.load(sys.stdin)
def parse(b):
    return ET.fromstring(b, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
try:
    old = parse(base64.b64decode(d['existing']))
except ET.ParseError as e:
    print('it is not well-formed XML (%s)' % e, file=sys.stderr); sys.exit(3)
if old.tag != q('unattend'):
    print('its root element is %s, not unattend in the %s namespace' % (old.tag, NS), file=sys.stderr); sys.exit(3)
new = parse(d['ours'].encode('utf-8'))
def merge(into, src):
    for ch in src:
        if not isinstance(ch.tag, str):
            continue
        have = into.find(ch.tag)
        if have is None:
            into.append(ch)
        elif len(ch) and ch.tag not in WHOLE:
            merge(have, ch)
        else:
            into.insert(list(into).index(have), ch)
            into.remove(have)
for s in new.findall(q('settings')):
    there = next((x for x in old.findall(q('settings')) if x.get('pass') == s.get('pass')), None)
    if there is None:
        old.append(s); continue
    for c in s.findall(q('component')):
        key = (c.get('name'), c.get('processorArchitecture'))
        tc = next((x for x in there.findall(q('component')) if (x.get('name'), x.get('processorArchitecture')) == key), None)
        if tc is None:
            there.append(c)
        else:
            merge(tc, c)
sys.stdout.write('<?xml version="1.0" encoding="utf-8"?>\r\n' + ET.tostring(old, encoding='unicode'))
`;

export const answerFileUnreadable = (guestPath: string, why: string) =>
  new FerryError('ANSWER_FILE_UNREADABLE', 5, `the guest's answer file ${guestPath} cannot be merged with Ferry's settings: ${why}; repair or remove it in the template, then customize again; nothing was changed`, { path: guestPath });

/** Ferry's answer file (ours) merged into the guest's own (existing, its bytes as read). */
export async function mergeUnattend(existing: Buffer, ours: string, guestPath: string): Promise<string> {
  const r = await run('python3', ['-c', MERGE_PY], { input: JSON.stringify({ existing: existing.toString('base64'), ours }), okCodes: [3] });
  if (r.exitCode === 3) throw answerFileUnreadable(guestPath, r.stderr.trim().split('\n').at(-1) ?? 'it cannot be read');
  return r.stdout;
}
