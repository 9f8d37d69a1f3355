// Drives Debian's chromium (headless, through playwright-core; never a
// downloaded browser) against shoal-scheduler's dashboard while a swarm pull
// runs. Protocol with the pytest side (test_dashboard.py):
//   argv[2]: JSON {base, token, out, hosts: [ids], task, timeout_s}
//   stdout:  "READY" once the page is loaded (the test then starts the pull),
//            then one JSON line with what the page showed: {"result": {...}}.
// Exits non-zero with a message on stderr when something is missing.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const deadline = Date.now() + (cfg.timeout_s || 120) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('[browser]', ...a);

async function until(what, fn, ms = 250) {
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(ms);
  }
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const result = { refused: {}, hosts_seen: [], progress: [], detail_progress: [], screenshots: [] };
  const consoleErrors = [];
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));

    // Without the token: the page and the API refuse.
    if (cfg.token) {
      const r = await page.goto(`${cfg.base}/`);
      result.refused.page_status = r.status();
      result.refused.page_text = (await page.textContent('body')).trim();
      result.refused.api_status = await page.evaluate(async () => (await fetch('/api/v1/hosts')).status);
      const shot = path.join(cfg.out, 'dashboard-refused.png');
      await page.screenshot({ path: shot });
      result.screenshots.push(shot);
    }
    // With it: /?token= sets the HttpOnly cookie and sends us to /. From here
    // on the page must log no error at all (the refusals above log 401s).
    consoleErrors.length = 0;
    const r = await page.goto(cfg.token ? `${cfg.base}/?token=${encodeURIComponent(cfg.token)}` : `${cfg.base}/`);
    result.page_status = r.status();
    result.url_after_login = page.url();
    result.cookies = (await ctx.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));

    // Every host appears.
    await until('every host in the hosts table', async () => {
      const ids = await page.$$eval('#hosts-table tbody tr', (rows) => rows.map((r) => r.dataset.hostId));
      result.hosts_seen = ids;
      return cfg.hosts.every((h) => ids.includes(h));
    });
    result.hosts_online_text = await page.textContent('#stat-hosts');
    console.log('READY');

    // The task appears, and its progress moves while the pull runs.
    const row = `#tasks-table tbody tr[data-task-id="${cfg.task}"]`;
    await until('the task row', () => page.$(row));
    let shotTaken = false;
    await until('the task to reach 100% with every peer done', async () => {
      const s = await page.$eval(row, (tr) => ({
        progress: Number(tr.querySelector('td.progress').dataset.progress),
        done: Number(tr.querySelector('td.peers-done').textContent),
        running: Number(tr.querySelector('td.peers-running').textContent),
        t: Date.now(),
      })).catch(() => null);
      if (!s) return false;
      const last = result.progress[result.progress.length - 1];
      if (!last || last.progress !== s.progress || last.done !== s.done) result.progress.push(s);
      if (!shotTaken && s.progress > 0.15 && s.progress < 0.9) {
        shotTaken = true;
        const shot = path.join(cfg.out, 'dashboard-overview.png');
        await page.screenshot({ path: shot, fullPage: true });
        result.screenshots.push(shot);
        result.rate_text_mid_pull = await page.textContent('#stat-rate');
      }
      return s.progress >= 1 && s.done >= cfg.hosts.length;
    }, 200);
    result.overview = {
      delivered: await page.textContent('#stat-delivered'),
      registry: await page.textContent('#stat-registry'),
      saved: await page.textContent('#stat-saved'),
    };
    result.chart_present = !!(await page.$('#chart canvas'));
    const shot = path.join(cfg.out, 'dashboard-done.png');
    await page.screenshot({ path: shot, fullPage: true });
    result.screenshots.push(shot);

    // The task's page: each peer's progress and the graph of who fed whom.
    await page.click(`${row} a`);
    await until('the peers of the task', async () => {
      const peers = await page.$$eval('#peers-table tbody tr', (rows) => rows.map((r) => ({
        host: r.dataset.hostId,
        progress: Number(r.querySelector('td.progress').dataset.progress),
      })));
      result.detail_progress = peers;
      return peers.length >= cfg.hosts.length;
    });
    result.edges = await page.$$eval('#task-graph path.edge', (es) => es.map((e) => ({ from: e.dataset.from, to: e.dataset.to })));
    result.task_url = page.url();
    const shot2 = path.join(cfg.out, 'dashboard-task.png');
    await page.screenshot({ path: shot2, fullPage: true });
    result.screenshots.push(shot2);

    // The preheat form (shown while a seed host is online): a job appears with its state.
    if (cfg.preheat_reference) {
      await page.goto(`${cfg.base}/#/preheat`);
      await until('the preheat form', async () => !(await page.$eval('#view-preheat', (e) => e.hidden)));
      await page.fill('#preheat-ref', cfg.preheat_reference);
      await page.click('#preheat-form button[type=submit]');
      const prow = '#preheat-table tbody tr[data-preheat-id]';
      await until('the preheat job row', () => page.$(prow));
      // ... and its progress until the seed holds the whole model.
      const states = [];
      await until('the preheat to succeed or fail', async () => {
        const s = await page.$eval(`${prow} td:nth-child(2)`, (td) => td.textContent).catch(() => '');
        if (s && states[states.length - 1] !== s) states.push(s);
        return s === 'succeeded' || s === 'failed';
      });
      result.preheat = await page.$eval(prow, (tr) => ({
        id: tr.dataset.preheatId,
        text: tr.textContent,
      }));
      result.preheat.states = states;
      result.preheat_message = await page.textContent('#preheat-message');
      const shot3 = path.join(cfg.out, 'dashboard-preheat.png');
      await page.screenshot({ path: shot3, fullPage: true });
      result.screenshots.push(shot3);
    }
    result.console_errors = consoleErrors;
    console.log(JSON.stringify({ result }));
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => {
  log(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
