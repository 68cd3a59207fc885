// The Ferry console: one ES module, no framework and no build step. Every
// figure it shows comes from the JSON API (GET /openapi.json), called with the
// session cookie that POST /login set; every action is an API call. Pages are
// addressed by the URL's fragment (#/jobs/ID) so the server serves one shell.
// Text goes into the page as text nodes only (never as HTML).

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const PAGE = 50;
const TERMINAL = ['done', 'failed', 'cancelled'];

// ——— small helpers ———

/** an element: h('a', { href: '#/' }, 'text', child…); attributes starting with "on" are listeners */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const bytes = n => n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
const duration = s => s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
const when = iso => iso ? new Date(iso).toLocaleString() : '-';
const state = s => h('span', { class: `state state-${s}` }, s);

class ApiError extends Error {
  constructor(status, body) { super(body?.message ?? `HTTP ${status}`); this.status = status; this.body = body; }
}

/** a JSON API call with the session cookie; 401 sends the user to the login form */
async function api(method, path, body) {
  const r = await fetch(path, {
    method, credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data;
  try { data = text ? JSON.parse(text) : undefined; } catch { data = { message: text }; }
  if (r.status === 401 && path !== '/login') { showLogin(); throw new ApiError(401, data); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// ——— pages and live streams: one page at a time, its streams closed when it goes ———

let cleanups = [];
function onLeave(f) { cleanups.push(f); }
function leave() { for (const f of cleanups.splice(0)) try { f(); } catch { /* already gone */ } }

function page(title, ...children) {
  document.title = `${title} · Ferry`;
  main.replaceChildren(h('h1', {}, title), ...children);
}

function problem(e) {
  return h('p', { class: 'alert', role: 'alert' }, e instanceof ApiError ? `${e.body?.error ?? e.status}: ${e.message}` : String(e.message ?? e));
}

// ——— login ———

function showLogin(message) {
  leave();
  nav.hidden = true;
  const err = h('p', { class: 'alert', role: 'alert', id: 'login-error' }, message ?? '');
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, 'aria-describedby': 'token-help login-error' });
  const form = h('form', { class: 'stack login panel', id: 'login' },
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'API token'), input,
      h('span', { class: 'muted', id: 'token-help' }, 'The token in $FERRY_HOME/api-token on the server.')),
    err,
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Log in')));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    err.textContent = '';
    try {
      await api('POST', '/login', { token: input.value });
      input.value = '';
      route();
    } catch (e) {
      err.textContent = e.status === 401 ? 'Wrong token: nothing was shown. Copy it again from $FERRY_HOME/api-token.' : `Cannot log in: ${e.message}`;
      input.focus();
    }
  });
  page('Log in to Ferry', form);
  input.focus();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/logout'); } catch { /* the session may be gone already */ }
  showLogin('Logged out.');
});

// ——— jobs table ———

function progressCell(p) {
  if (!p || !p.total) return h('span', { class: 'muted' }, '-');
  const pct = Math.min(100, Math.floor((p.bytes / p.total) * 100));
  const bar = h('progress', { max: p.total, value: p.bytes, 'aria-label': `${pct}% copied` });
  const rate = p.rate ? `${bytes(p.rate)}/s${p.etaSeconds !== undefined ? `, ETA ${duration(p.etaSeconds)}` : ''}` : '';
  return h('span', { class: 'progress' }, bar, ' ', h('span', { class: 'rate' }, `${pct}%${rate ? ` · ${rate}` : ''}`));
}

const stepOf = j => j.steps.find(s => s.state === 'running')?.name ?? (j.state === 'done' ? '-' : j.steps.find(s => s.state === 'failed')?.name ?? '-');

async function jobsPage(params) {
  const filter = params.get('state') ?? '';
  const offset = Number(params.get('offset') ?? 0);
  const select = h('select', { id: 'state-filter', name: 'state' },
    ['', 'queued', 'running', 'done', 'failed', 'cancelled'].map(s => h('option', { value: s, selected: s === filter }, s || 'all states')));
  select.addEventListener('change', () => { location.hash = `#/jobs${select.value ? `?state=${select.value}` : ''}`; });
  const body = h('tbody');
  const count = h('span', { class: 'muted', id: 'jobs-count', 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' });
  page('Jobs',
    h('form', { class: 'row', onsubmit: e => e.preventDefault() },
      h('div', { class: 'field' }, h('label', { for: 'state-filter' }, 'State'), select),
      h('div', {}, h('a', { href: '#/submit' }, 'Submit a conversion'))),
    count,
    h('div', { class: 'table-wrap' }, h('table', { class: 'cards', id: 'jobs' },
      h('thead', {}, h('tr', {}, ['Job', 'State', 'Source', 'Target', 'Step', 'Progress'].map(t => h('th', { scope: 'col' }, t)))), body)),
    pager);

  const rows = new Map();
  // the latest live progress of each running job: a reload of the rows must not move a bar back to the stored (older) figure
  const live = new Map();
  async function load() {
    const q = new URLSearchParams({ order: 'newest', limit: String(PAGE), offset: String(offset) });
    if (filter) q.set('state', filter);
    const r = await api('GET', `/jobs?${q}`);
    rows.clear();
    body.replaceChildren(...r.jobs.map(j => {
      const prog = h('td', { 'data-label': 'Progress' }, progressCell(j.state === 'running' ? live.get(j.id) ?? j.steps.find(s => s.state === 'running')?.progress : undefined));
      const stepCell = h('td', { 'data-label': 'Step' }, stepOf(j));
      const tr = h('tr', { 'data-job': j.id },
        h('td', { 'data-label': 'Job' }, h('a', { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
        h('td', { 'data-label': 'State' }, state(j.state)),
        h('td', { 'data-label': 'Source', class: 'path' }, j.spec.source ?? j.spec.machine ?? '-'),
        h('td', { 'data-label': 'Target', class: 'path' }, j.spec.target ?? j.spec.machine ?? '-'),
        stepCell, prog);
      rows.set(j.id, { prog, stepCell });
      return tr;
    }));
    count.textContent = r.total ? `${r.total} job${r.total === 1 ? '' : 's'}${r.total > PAGE ? `, ${offset + 1}–${Math.min(offset + PAGE, r.total)} shown` : ''}` : 'No jobs yet.';
    const link = (o, text) => h('a', { href: `#/jobs?${new URLSearchParams({ ...(filter ? { state: filter } : {}), offset: String(o) })}` }, text);
    pager.replaceChildren(...[offset > 0 ? link(Math.max(0, offset - PAGE), '← Newer') : null, offset + PAGE < r.total ? link(offset + PAGE, 'Older →') : null].filter(Boolean));
  }
  await load();

  // one stream for every job: progress moves the bars, a state or step change reloads the page of rows
  let reload;
  const es = new EventSource('/events');
  onLeave(() => { es.close(); clearTimeout(reload); });
  const again = () => { clearTimeout(reload); reload = setTimeout(() => load().catch(() => {}), 300); };
  es.addEventListener('progress', ev => {
    const p = JSON.parse(ev.data);
    live.set(p.jobId, p);
    const row = rows.get(p.jobId);
    if (row) { row.prog.replaceChildren(progressCell(p)); if (p.step) row.stepCell.textContent = p.step; }
  });
  const changed = ev => { live.delete(JSON.parse(ev.data).jobId); again(); };
  es.addEventListener('state', changed);
  es.addEventListener('step', changed);
}

// ——— one job ———

async function jobPage(id) {
  let job = await api('GET', `/jobs/${encodeURIComponent(id)}`);
  const head = h('div');
  const steps = h('ol', { class: 'steps', id: 'steps' });
  const prog = h('div', { id: 'progress' });
  const error = h('div', { id: 'job-error' });
  const actions = h('div', { class: 'actions' });
  const actionMsg = h('p', { class: 'alert', role: 'alert', id: 'action-error' });
  const log = h('pre', { class: 'log', id: 'log', tabindex: '0', 'aria-label': 'Job log' });
  page(`Job ${id}`, head, prog, error, actions, actionMsg, h('h2', {}, 'Steps'), steps, h('h2', {}, 'Log'), log);

  const act = (label, path, cls) => h('button', {
    type: 'button', class: cls, id: `${label.toLowerCase()}-job`,
    onclick: async ev => {
      ev.target.disabled = true;
      actionMsg.textContent = '';
      try { job = await api('POST', `/jobs/${encodeURIComponent(id)}/${path}`); draw(); if (path === 'retry') follow(); }
      catch (e) { actionMsg.textContent = `${e.body?.error ?? e.status}: ${e.message}`; ev.target.disabled = false; }
    },
  }, label);

  function draw() {
    const s = job.spec;
    head.replaceChildren(h('dl', { class: 'facts' },
      h('dt', {}, 'State'), h('dd', { id: 'job-state' }, state(job.state)),
      h('dt', {}, 'Kind'), h('dd', {}, s.kind ?? 'convert'),
      s.source ? [h('dt', {}, 'Source'), h('dd', {}, s.source)] : null,
      s.target ? [h('dt', {}, 'Target'), h('dd', {}, s.target)] : null,
      s.machine ? [h('dt', {}, 'Machine'), h('dd', {}, h('a', { href: `#/machines/${encodeURIComponent(s.machine)}` }, s.machine))] : null,
      s.format ? [h('dt', {}, 'Format'), h('dd', {}, s.format)] : null,
      s.profile ? [h('dt', {}, 'Profile'), h('dd', {}, s.profile)] : null,
      h('dt', {}, 'Attempts'), h('dd', {}, job.attempts),
      h('dt', {}, 'Created'), h('dd', {}, when(job.createdAt)),
      h('dt', {}, 'Updated'), h('dd', {}, when(job.updatedAt))));
    steps.replaceChildren(...job.steps.map(st => h('li', {}, `${st.name}: `, state(st.state),
      st.startedAt ? h('span', { class: 'muted' }, ` ${when(st.startedAt)}${st.endedAt ? ` → ${when(st.endedAt)}` : ''}`) : '')));
    error.replaceChildren(job.error ? h('div', { class: 'alert', role: 'alert' }, h('strong', { id: 'error-code' }, job.error.code), ': ', h('span', { id: 'error-message' }, job.error.message)) : '');
    actions.replaceChildren(
      ...(['queued', 'running'].includes(job.state) ? [act('Cancel', 'cancel', 'danger')] : []),
      ...(['failed', 'cancelled'].includes(job.state) ? [act('Retry', 'retry', 'secondary')] : []));
    if (TERMINAL.includes(job.state)) prog.replaceChildren();
  }
  draw();

  let lastLine = 0, logTimer;
  async function moreLog() {
    const r = await api('GET', `/jobs/${encodeURIComponent(id)}/logs?after=${lastLine}`);
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const l of r.lines) { log.append(`${l.line}\n`); lastLine = l.n; }
    if (follow) log.scrollTop = log.scrollHeight;
  }
  await moreLog();

  let es;
  function follow() {
    es?.close();
    if (TERMINAL.includes(job.state)) return;
    es = new EventSource(`/jobs/${encodeURIComponent(id)}/events`);
    es.addEventListener('progress', ev => { const p = JSON.parse(ev.data); prog.replaceChildren(h('p', {}, `${p.step ?? ''} `, progressCell(p))); });
    const refresh = async () => { job = await api('GET', `/jobs/${encodeURIComponent(id)}`); draw(); };
    es.addEventListener('step', () => refresh().catch(() => {}));
    es.addEventListener('log', () => { clearTimeout(logTimer); logTimer = setTimeout(() => moreLog().catch(() => {}), 150); });
    es.addEventListener('state', ev => {
      const e = JSON.parse(ev.data);
      if (TERMINAL.includes(e.state)) es.close();
      refresh().then(moreLog).catch(() => {});
    });
  }
  follow();
  onLeave(() => { es?.close(); clearTimeout(logTimer); });
}

// ——— submit ———

function field(name, label, input, help) {
  input.id = `f-${name}`;
  input.name = name;
  input.setAttribute('aria-describedby', `e-${name}${help ? ` h-${name}` : ''}`);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input,
    help ? h('span', { class: 'muted', id: `h-${name}` }, help) : null,
    h('span', { class: 'field-error', id: `e-${name}`, 'data-field': name }));
}

async function submitPage() {
  const profiles = await api('GET', '/profiles').then(r => r.profiles.map(p => p.name), () => []);
  const text = () => h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
  const general = h('div', { class: 'alert', role: 'alert', id: 'form-error' });
  const form = h('form', { class: 'stack', id: 'submit-form', novalidate: true },
    field('source', 'Source', text(), 'a disk image path on the server, or nbd://, nbds://, iscsi:// …'),
    field('target', 'Target', text(), 'the image to write, a path on the server'),
    field('format', 'Format', h('select', {}, ['', 'qcow2', 'raw', 'vmdk', 'vhdx', 'vdi'].map(f => h('option', { value: f }, f || 'from the extension')))),
    field('size', 'Size', text(), 'e.g. 20G (default: the source size)'),
    field('profile', 'Hardware profile', h('input', { type: 'text', list: 'profiles', autocomplete: 'off' }), 'leave empty to keep the hardware'),
    h('datalist', { id: 'profiles' }, profiles.map(p => h('option', { value: p }))),
    h('fieldset', {}, h('legend', {}, 'Register as a libvirt domain (optional)'),
      field('register.libvirt', 'libvirt URI', text(), 'e.g. qemu:///system'),
      field('register.name', 'Domain name', text()),
      field('register.memory', 'Memory', text(), 'e.g. 2G'),
      field('register.cpus', 'CPUs', h('input', { type: 'number', min: '1', step: '1' })),
      h('div', { class: 'field' }, h('label', {}, h('input', { type: 'checkbox', id: 'f-register.start', name: 'register.start' }), ' start it'))),
    general,
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Submit')));
  page('Submit a conversion', form);

  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
    for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
    general.textContent = '';
    const v = n => form.elements.namedItem(n).value.trim();
    // only what was filled in: the API says what is missing
    const spec = {};
    for (const k of ['source', 'target', 'format', 'size', 'profile']) if (v(k)) spec[k] = v(k);
    const reg = {};
    for (const k of ['libvirt', 'name', 'memory']) if (v(`register.${k}`)) reg[k] = v(`register.${k}`);
    if (v('register.cpus')) reg.cpus = Number(v('register.cpus'));
    if (form.elements.namedItem('register.start').checked) reg.start = true;
    if (Object.keys(reg).length) spec.register = reg;
    try {
      const job = await api('POST', '/jobs', spec);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      const list = e.body?.fieldErrors ?? [];
      const unplaced = [];
      for (const f of list) {
        const slot = form.querySelector(`.field-error[data-field="${CSS.escape(f.field)}"]`);
        if (slot) {
          slot.textContent = slot.textContent ? `${slot.textContent}; ${f.message}` : f.message;
          document.getElementById(`f-${f.field}`)?.setAttribute('aria-invalid', 'true');
        } else unplaced.push(`${f.field}: ${f.message}`);
      }
      general.textContent = list.length ? `The job was not submitted: fix the fields marked.${unplaced.length ? ` ${unplaced.join('; ')}` : ''}` : `${e.body?.error ?? e.status}: ${e.message}`;
      (form.querySelector('[aria-invalid="true"]') ?? general).focus?.();
    }
  });
  form.elements.namedItem('source').focus();
}

// ——— images ———

const osText = o => o.type === 'linux'
  ? `${o.distro ?? 'linux'} ${o.patchLevel ?? o.version ?? ''} (${[o.arch, o.firmware, o.kernels.length ? `kernel ${o.kernels.join(', ')}` : ''].filter(Boolean).join(', ')})`
  : `${o.name ?? 'Windows'} ${o.version ?? ''} ${o.patchLevel ?? ''} (${[o.arch, o.firmware].filter(Boolean).join(', ')})`;

async function imagesPage(params) {
  const filters = [['os', 'OS', 'linux or windows'], ['distro', 'Distribution', 'debian, ubuntu, rhel …'], ['version', 'Version', "'>=12', '12'"],
    ['kernel', 'Kernel', "'>=6.1'"], ['hasDriver', 'Has driver', 'virtio_blk, viostor …'], ['firmware', 'Firmware', 'bios or uefi'], ['tag', 'Tag', '']];
  const form = h('form', { class: 'row', id: 'image-search', role: 'search' },
    filters.map(([n, label, ph]) => field(n, label, h('input', { type: 'text', value: params.get(n) ?? '', placeholder: ph, autocomplete: 'off' }))),
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Search')));
  const results = h('div', { id: 'image-results', 'aria-live': 'polite' });
  page('Images', form, results);
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [n] of filters) { const v = form.elements.namedItem(n).value.trim(); if (v) q.set(n, v); }
    location.hash = `#/images${q.size ? `?${q}` : ''}`;
  });
  const q = new URLSearchParams();
  for (const [n] of filters) if (params.get(n)) q.set(n, params.get(n));
  try {
    const r = await api('GET', `/images?${q}`);
    results.replaceChildren(
      h('p', { class: 'muted', id: 'image-count' }, r.images.length ? `${r.images.length} image${r.images.length === 1 ? '' : 's'} match.` : 'No image matches.'),
      r.images.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'cards' },
        h('thead', {}, h('tr', {}, ['Name', 'Operating system', 'Tags', 'Source'].map(t => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, r.images.map(i => h('tr', {},
          h('td', { 'data-label': 'Name' }, h('a', { href: `#/images/${encodeURIComponent(i.name)}` }, i.name)),
          h('td', { 'data-label': 'OS' }, i.os.length ? i.os.map(osText).join('; ') : 'no operating system found'),
          h('td', { 'data-label': 'Tags' }, i.tags.join(', ') || '-'),
          h('td', { 'data-label': 'Source', class: 'path' }, i.source)))))) : '',
      [...r.missing.map(m => h('p', { class: 'alert' }, `${m.name}: its source ${m.source} is missing`)),
        ...r.failed.map(m => h('p', { class: 'alert' }, `${m.name}: ${m.code}: ${m.message}`))]);
  } catch (e) { results.replaceChildren(problem(e)); }
}

async function imagePage(name) {
  const r = await api('GET', `/images/${encodeURIComponent(name)}`);
  const rep = r.report;
  const parts = [
    h('dl', { class: 'facts' },
      h('dt', {}, 'Source'), h('dd', {}, r.source),
      h('dt', {}, 'Tags'), h('dd', {}, r.tags.join(', ') || '-'),
      h('dt', {}, 'Format'), h('dd', {}, `${rep.format}, ${bytes(rep.virtualSize)}`),
      h('dt', {}, 'Partition table'), h('dd', {}, rep.partitionTable ? rep.partitionTable.label : 'none'),
      h('dt', {}, 'Inspected'), h('dd', {}, when(r.inspectedAt))),
    h('h2', {}, 'File systems'),
    h('ul', {}, rep.fileSystems.map(f => h('li', {}, `p${f.partition}${f.lv ? ` ${f.lv}` : ''}: ${f.encrypted ? `encrypted (${f.encrypted})` : f.type ?? 'unknown'}${f.label ? ` LABEL=${f.label}` : ''}, ${bytes(f.size)}${f.error ? ` — ${f.error.code}` : ''}`))),
    h('h2', {}, 'Operating systems'),
  ];
  if (!rep.operatingSystems.length) parts.push(h('p', { id: 'no-os' }, `No operating system found${rep.note ? `: ${rep.note}` : ''}.`));
  for (const os of rep.operatingSystems) {
    if (os.type === 'linux') {
      parts.push(h('div', { class: 'panel' },
        h('p', {}, h('strong', {}, `${os.name}`), ` (${os.distro} ${os.patchLevel ?? os.version ?? ''}, ${os.arch ?? '?'}), firmware ${os.firmware}, boot ${os.bootloader.kind}, hostname ${os.hostname ?? '-'}`),
        h('h2', {}, 'Kernels and drivers'),
        h('ul', {}, os.kernels.map(k => h('li', {}, `${k.version}${k.default ? ' (default)' : ''}: storage ${k.modules.storage.join(' ') || '-'}; network ${k.modules.network.join(' ') || '-'}`))),
        h('h2', {}, 'What the initramfs lacks for each profile'),
        h('div', { class: 'table-wrap' }, h('table', { class: 'cards', id: 'initramfs' },
          h('thead', {}, h('tr', {}, ['Kernel', 'Profile', 'Missing boot drivers'].map(t => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, r.initramfs.map(g => h('tr', {}, h('td', { 'data-label': 'Kernel' }, g.kernel), h('td', { 'data-label': 'Profile' }, g.profile),
            h('td', { 'data-label': 'Missing' }, g.lacks.join(' ') || 'nothing')))))),
        h('h2', {}, 'Network'),
        h('ul', {}, [...os.network.interfaces.map(i => h('li', {}, `${i.name} ${i.method}${i.addresses.length ? ` ${i.addresses.join(' ')}` : ''} (${i.source})`)),
          ...os.network.macBindings.map(b => h('li', {}, `MAC ${b.mac} bound to ${b.name} (${b.source} ${b.file})`))]),
        os.network.interfaces.length + os.network.macBindings.length ? '' : h('p', { class: 'muted' }, 'No interfaces or MAC bindings configured.')));
    } else {
      parts.push(h('div', { class: 'panel' },
        h('p', {}, h('strong', {}, os.productName ?? 'Windows'), ` ${os.version ?? ''} build ${os.build ?? '?'} ${os.arch ?? ''}`),
        h('h2', {}, 'Boot storage drivers'), h('p', {}, os.bootStorageDrivers.map(d => d.name).join(' ') || '-'),
        h('h2', {}, 'Network'),
        h('ul', {}, os.nics.map(n => h('li', {}, `${n.name ?? n.guid}: ${n.dhcp ? 'DHCP' : n.addresses.join(' ')}${n.service ? ` (${n.service})` : ''}`)))));
    }
  }
  parts.push(h('h2', {}, 'History'), h('ol', { id: 'history' }, r.history.map(e => h('li', {}, `${when(e.at)}: ${e.event}`,
    e.jobId ? [' (', h('a', { href: `#/jobs/${encodeURIComponent(e.jobId)}` }, e.jobId), ')'] : ''))));
  page(`Image ${r.name}`, ...parts);
}

// ——— drivers and profiles ———

async function driversPage() {
  const [d, p] = await Promise.all([api('GET', '/drivers'), api('GET', '/profiles')]);
  // per OS, then per kernel (Linux) or version (Windows)
  const groups = new Map();
  for (const f of d.files) {
    const key = `${f.osFamily}${f.osRelease ? ` ${f.osRelease}` : ''} · ${f.version}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(f);
  }
  page('Drivers and profiles',
    h('h2', {}, 'Hardware profiles'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'cards', id: 'profiles' },
      h('thead', {}, h('tr', {}, ['Profile', 'Platform', 'Machine', 'Firmware', 'Disk bus', 'NIC', 'Linux boot drivers'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, p.profiles.map(x => h('tr', {},
        h('td', { 'data-label': 'Profile' }, h('strong', {}, x.name), h('br'), h('span', { class: 'muted' }, x.description ?? '')),
        h('td', { 'data-label': 'Platform' }, x.platform ?? '-'), h('td', { 'data-label': 'Machine' }, x.machine),
        h('td', { 'data-label': 'Firmware' }, x.firmware ?? '-'), h('td', { 'data-label': 'Disk bus' }, x.diskBus),
        h('td', { 'data-label': 'NIC' }, x.nicModel), h('td', { 'data-label': 'Boot drivers' }, x.linux.bootDrivers.join(' ') || '-')))))),
    h('h2', {}, 'Driver store'),
    d.files.length ? [...groups].map(([k, files]) => [h('h3', {}, k), h('div', { class: 'table-wrap' }, h('table', { class: 'cards' },
      h('thead', {}, h('tr', {}, ['Component', 'Variant', 'Arch', 'Size', 'Container'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, files.map(f => h('tr', {}, h('td', { 'data-label': 'Component' }, f.component), h('td', { 'data-label': 'Variant' }, f.variant ?? '-'),
        h('td', { 'data-label': 'Arch' }, f.arch), h('td', { 'data-label': 'Size' }, bytes(f.size)), h('td', { 'data-label': 'Container' }, f.container))))))])
      : h('p', { class: 'muted', id: 'no-drivers' }, "The driver store is empty; fill it with 'ferry drivers import'."));
}

// ——— machines ———

async function machinesPage() {
  const r = await api('GET', '/machines');
  page('Machines', r.machines.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'cards', id: 'machines' },
    h('thead', {}, h('tr', {}, ['Machine', 'State', 'Serial', 'MACs', 'Disks', 'Last seen'].map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, r.machines.map(m => h('tr', {},
      h('td', { 'data-label': 'Machine' }, h('a', { href: `#/machines/${encodeURIComponent(m.id)}` }, m.id)),
      h('td', { 'data-label': 'State' }, m.state), h('td', { 'data-label': 'Serial' }, m.serial ?? '-'),
      h('td', { 'data-label': 'MACs' }, m.macs.join(' ')), h('td', { 'data-label': 'Disks' }, m.disks.map(d => `${d.path ?? '?'} ${d.sizeBytes ? bytes(d.sizeBytes) : ''}`).join(', ')),
      h('td', { 'data-label': 'Last seen' }, when(m.lastSeenAt)))))))
    : h('p', { class: 'muted', id: 'no-machines' }, 'No machine has registered yet: boot one into the Ferry agent (ferry pxe serve, or the agent ISO).'));
}

async function machinePage(id) {
  const { machine: m, history } = await api('GET', `/machines/${encodeURIComponent(id)}`);
  const msg = h('p', { class: 'alert', role: 'alert' });
  const disk = () => h('input', { type: 'text', autocomplete: 'off' });
  const deploy = h('form', { class: 'stack panel', id: 'deploy-form' }, h('h2', {}, 'Deploy an image onto it'),
    field('deploy-source', 'Image (path on the server)', h('input', { type: 'text', autocomplete: 'off' })), field('deploy-disk', 'Disk', disk()),
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Deploy')));
  const capture = h('form', { class: 'stack panel', id: 'capture-form' }, h('h2', {}, 'Capture it into an image'),
    field('capture-target', 'Target (path on the server)', h('input', { type: 'text', autocomplete: 'off' })), field('capture-disk', 'Disk', disk()),
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Capture')));
  const submit = (form, spec) => form.addEventListener('submit', async ev => {
    ev.preventDefault();
    msg.textContent = '';
    const s = spec();
    try { const j = await api('POST', '/jobs', s); location.hash = `#/jobs/${encodeURIComponent(j.id)}`; }
    catch (e) { msg.textContent = e.body?.fieldErrors ? e.body.fieldErrors.map(f => `${f.field}: ${f.message}`).join('; ') : `${e.body?.error ?? e.status}: ${e.message}`; }
  });
  const val = (f, n) => f.elements.namedItem(n).value.trim() || undefined;
  submit(deploy, () => ({ kind: 'deploy', machine: m.id, source: val(deploy, 'deploy-source'), disk: val(deploy, 'deploy-disk') }));
  submit(capture, () => ({ kind: 'capture', machine: m.id, target: val(capture, 'capture-target'), disk: val(capture, 'capture-disk') }));
  page(`Machine ${m.id}`,
    h('dl', { class: 'facts' }, h('dt', {}, 'State'), h('dd', {}, m.state), h('dt', {}, 'Serial'), h('dd', {}, m.serial ?? '-'),
      h('dt', {}, 'SMBIOS UUID'), h('dd', {}, m.smbiosUuid ?? '-'), h('dt', {}, 'MACs'), h('dd', {}, m.macs.join(' ')),
      h('dt', {}, 'Disks'), h('dd', {}, m.disks.map(d => `${d.path ?? '?'} ${d.model ?? ''} ${d.sizeBytes ? bytes(d.sizeBytes) : ''}`).join('; ')),
      h('dt', {}, 'Boot target'), h('dd', {}, m.bootTarget), h('dt', {}, 'Last seen'), h('dd', {}, when(m.lastSeenAt))),
    msg, deploy, capture,
    h('h2', {}, 'History'), h('ol', {}, history.map(e => h('li', {}, `${when(e.at)}: ${e.event} → ${e.state}${e.detail ? ` (${e.detail})` : ''}`))));
}

// ——— routing ———

const ROUTES = [
  [/^#?\/?$/, () => { location.replace('#/jobs'); }],
  [/^#\/jobs$/, (_, p) => jobsPage(p)],
  [/^#\/jobs\/([^/]+)$/, m => jobPage(decodeURIComponent(m[1]))],
  [/^#\/submit$/, () => submitPage()],
  [/^#\/images$/, (_, p) => imagesPage(p)],
  [/^#\/images\/([^/]+)$/, m => imagePage(decodeURIComponent(m[1]))],
  [/^#\/drivers$/, () => driversPage()],
  [/^#\/machines$/, () => machinesPage()],
  [/^#\/machines\/([^/]+)$/, m => machinePage(decodeURIComponent(m[1]))],
];

let generation = 0;
async function route() {
  leave();
  const gen = ++generation;
  const [path, query] = location.hash.split('?');
  const params = new URLSearchParams(query ?? '');
  // is the session good? (401 shows the login form)
  try { await api('GET', '/session'); } catch (e) { if (e.status !== 401) main.replaceChildren(problem(e)); return; }
  if (gen !== generation) return;
  nav.hidden = false;
  for (const a of nav.querySelectorAll('a')) {
    if (path.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const hit = ROUTES.find(([re]) => re.test(path));
  if (!hit) { page('Not found', h('p', {}, 'No such page. '), h('a', { href: '#/jobs' }, 'Jobs')); return; }
  try {
    await hit[1](hit[0].exec(path), params);
  } catch (e) {
    if (e.status === 401 || gen !== generation) return;
    page('Something went wrong', problem(e));
  }
  if (gen === generation && document.activeElement === document.body) main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
route();
