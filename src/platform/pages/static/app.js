/* global document, fetch, location, URLSearchParams */
// The platform pages' only script (an ES module; no framework, no build step). It talks
// to the JSON API with fetch (same-origin credentials, the CSRF token /api/v1/me or sign-in
// gives in X-CSRF-Token) and shows the API's sanitized error messages. Text is always set
// with textContent, never as HTML.

let csrf;

class ApiError extends Error {
  constructor(status, message, ref) {
    super(message);
    this.status = status;
    this.ref = ref;
  }
}

async function api(method, url, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const r = await fetch(url, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = {};
  }
  if (!r.ok) {
    const e = data && data.error ? data.error : {};
    throw new ApiError(r.status, typeof e.message === 'string' ? e.message : `The request failed (HTTP ${r.status}).`, e.correlation_id);
  }
  return data;
}

const $ = (id) => document.getElementById(id);

function show(text, kind) {
  const m = $('message');
  if (!m) return;
  m.textContent = text;
  m.className = kind;
  m.hidden = false;
}

function showError(err) {
  if (err instanceof ApiError) show(err.ref ? `${err.message} (reference ${err.ref})` : err.message, 'error');
  else show('The server could not be reached. Try again.', 'error');
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.append(td);
  return td;
}

function button(label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}

/** The caller (GET /api/v1/me), or a redirect to the sign-in page. */
async function signedIn() {
  try {
    const me = await api('GET', '/api/v1/me');
    csrf = me.csrfToken;
    if ((me.user.roles || []).includes('tenant_admin') || (me.user.roles || []).includes('auditor')) {
      for (const a of document.querySelectorAll('[data-admin]')) a.hidden = false;
    }
    return me;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      location.assign('/signin');
      return undefined;
    }
    throw err;
  }
}

function wireSignOut() {
  const b = $('signout');
  if (!b) return;
  b.addEventListener('click', async () => {
    try {
      await api('POST', '/api/v1/auth/signout');
      location.assign('/signin');
    } catch (err) {
      showError(err);
    }
  });
}

const pages = {
  async signin() {
    // after a right password, an enrolled account gives its code (or a recovery code) in a second step
    let secondStep = false;
    const done = (r) => {
      // an account that must have a second factor and has none may only enrol
      if (r.secondFactor === 'enrol') location.assign('/totp?required=1');
      else location.assign(r.passwordChangeRequired ? '/password?required=1' : '/');
    };
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (secondStep) {
        const code = $('totp').value.trim();
        const body = /^\d{6,8}$/.test(code) ? { code } : { recoveryCode: code };
        try {
          done(await api('POST', '/api/v1/auth/totp', body));
        } catch (err) {
          $('totp').value = '';
          showError(err);
        }
        return;
      }
      const body = { tenant: $('tenant').value.trim(), username: $('username').value.trim(), password: $('password').value };
      try {
        const r = await api('POST', '/api/v1/auth/signin', body);
        if (r.secondFactor === 'totp') {
          csrf = r.csrfToken;
          secondStep = true;
          $('password').value = '';
          for (const id of ['tenant', 'username', 'password']) $(id).disabled = true;
          $('second-factor').hidden = false;
          $('totp').focus();
          show('Enter the code from your authenticator app (or a recovery code).', 'notice');
          return;
        }
        done(r);
      } catch (err) {
        $('password').value = '';
        showError(err);
      }
    });
  },

  async account() {
    const me = await signedIn();
    if (!me) return;
    $('me-username').textContent = me.user.username;
    $('me-displayname').textContent = me.user.displayName || '';
    $('me-tenant').textContent = me.tenant.name || me.tenant.slug;
    $('me-roles').textContent = (me.user.roles || []).join(', ');
    $('account').setAttribute('aria-busy', 'false');
    if (me.passwordChangeRequired) show('You must change your password before using anything else.', 'notice');
  },

  async password() {
    const me = await signedIn();
    if (!me) return;
    if (me.passwordChangeRequired) show('You must change your password before using anything else.', 'notice');
    $('password-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if ($('new-password').value !== $('confirm-password').value) {
        show('The two new passwords differ.', 'error');
        return;
      }
      try {
        await api('POST', '/api/v1/me/password', { currentPassword: $('current-password').value, newPassword: $('new-password').value });
        for (const id of ['current-password', 'new-password', 'confirm-password']) $(id).value = '';
        show('Your password was changed. Your other sessions were ended.', 'ok');
      } catch (err) {
        showError(err);
      }
    });
  },

  async sessions() {
    const me = await signedIn();
    if (!me) return;
    const load = async () => {
      const { sessions } = await api('GET', '/api/v1/me/sessions');
      const tbody = $('sessions').tBodies[0];
      tbody.replaceChildren();
      for (const s of sessions) {
        const tr = document.createElement('tr');
        tr.dataset.sessionId = s.id;
        if (s.current) tr.className = 'current';
        cell(tr, when(s.createdAt) + (s.current ? ' (this session)' : ''));
        cell(tr, when(s.lastSeenAt));
        cell(tr, s.clientAddress || '');
        cell(tr, s.userAgent || '');
        const actions = cell(tr, '');
        const b = button(s.current ? 'Sign out here' : 'End session', async () => {
          try {
            await api('DELETE', `/api/v1/me/sessions/${encodeURIComponent(s.id)}`);
            if (s.current) location.assign('/signin');
            else {
              show('The session was ended.', 'ok');
              await load();
            }
          } catch (err) {
            showError(err);
          }
        });
        b.setAttribute('aria-label', s.current ? 'End this session' : `End the session signed in ${when(s.createdAt)}`);
        actions.append(b);
        tbody.append(tr);
      }
    };
    await load();
  },

  async users() {
    const me = await signedIn();
    if (!me) return;
    const load = async () => {
      const { users } = await api('GET', '/api/v1/users');
      const tbody = $('users').tBodies[0];
      const select = $('reset-user');
      tbody.replaceChildren();
      select.replaceChildren();
      for (const u of users) {
        const tr = document.createElement('tr');
        tr.dataset.username = u.username;
        cell(tr, u.username);
        cell(tr, u.displayName || '');
        cell(tr, (u.roles || []).join(', '));
        cell(tr, u.status + (u.mustChangePassword ? ' (must change password)' : ''));
        const actions = cell(tr, '');
        if (u.id !== me.user.id) {
          const disable = u.status === 'active';
          const b = button(disable ? 'Disable' : 'Enable', async () => {
            try {
              await api('PATCH', `/api/v1/users/${encodeURIComponent(u.id)}`, { status: disable ? 'disabled' : 'active' });
              show(`${u.username} is now ${disable ? 'disabled' : 'active'}.`, 'ok');
              await load();
            } catch (err) {
              showError(err);
            }
          });
          b.setAttribute('aria-label', `${disable ? 'Disable' : 'Enable'} ${u.username}`);
          actions.append(b);
        }
        tbody.append(tr);
        const opt = document.createElement('option');
        opt.value = u.id;
        opt.textContent = u.username;
        select.append(opt);
      }
    };
    try {
      await load();
    } catch (err) {
      showError(err);
      for (const f of document.querySelectorAll('form')) f.hidden = true;
      return;
    }
    $('create-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { username: $('new-username').value.trim(), roles: [$('new-role').value], password: $('new-user-password').value };
      const name = $('new-displayname').value.trim();
      if (name) body.displayName = name;
      try {
        const r = await api('POST', '/api/v1/users', body);
        $('create-form').reset();
        show(`User ${r.user.username} was created; they must change the password at first sign-in.`, 'ok');
        await load();
      } catch (err) {
        showError(err);
      }
    });
    $('reset-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const r = await api('POST', `/api/v1/users/${encodeURIComponent($('reset-user').value)}/reset-password`, { password: $('reset-password').value });
        $('reset-password').value = '';
        show(`The password of ${r.user.username} was reset; they must change it at next sign-in.`, 'ok');
        await load();
      } catch (err) {
        showError(err);
      }
    });
  },

  async policy() {
    const me = await signedIn();
    if (!me) return;
    const form = $('policy-form');
    const numbers = ['minPasswordLength', 'maxFailedAttempts', 'failureWindowSeconds', 'lockoutSeconds', 'passwordExpiryDays', 'sessionIdleSeconds', 'sessionAbsoluteSeconds'];
    const fill = (policy) => {
      for (const k of numbers) $(k).value = String(policy[k]);
      $('rejectCommonPasswords').checked = policy.rejectCommonPasswords === true;
      form.setAttribute('aria-busy', 'false');
    };
    try {
      fill((await api('GET', '/api/v1/policy')).policy);
    } catch (err) {
      showError(err);
      form.hidden = true;
      return;
    }
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { rejectCommonPasswords: $('rejectCommonPasswords').checked };
      for (const k of numbers) body[k] = Number($(k).value);
      try {
        fill((await api('PUT', '/api/v1/policy', body)).policy);
        show('The policy was saved.', 'ok');
      } catch (err) {
        showError(err);
      }
    });
  },

  async audit() {
    const me = await signedIn();
    if (!me) return;
    const PAGE = 50;
    let offset = 0;
    let total = 0;
    const filters = () => {
      const q = new URLSearchParams();
      const add = (k, id) => {
        const v = $(id).value.trim();
        if (v) q.set(k, v);
      };
      add('from', 'audit-from');
      add('to', 'audit-to');
      add('action', 'audit-action');
      add('actor', 'audit-actor');
      add('outcome', 'audit-outcome');
      return q;
    };
    const load = async () => {
      const q = filters();
      for (const f of ['jsonl', 'csv']) {
        const e = new URLSearchParams(q);
        e.set('format', f);
        $(`export-${f}`).href = `/api/v1/audit/export?${e}`;
      }
      q.set('offset', String(offset));
      q.set('limit', String(PAGE));
      const r = await api('GET', `/api/v1/audit?${q}`);
      total = r.total;
      const tbody = $('audit').tBodies[0];
      tbody.replaceChildren();
      for (const e of r.entries) {
        const tr = document.createElement('tr');
        tr.dataset.seq = String(e.seq);
        tr.dataset.outcome = e.outcome;
        cell(tr, when(e.ts));
        cell(tr, e.action === e.type ? e.type : `${e.type}: ${e.action}`);
        cell(tr, e.actor);
        cell(tr, e.outcome);
        cell(tr, e.clientAddress);
        const details = { ...e.fields };
        for (const k of ['tenant', 'actor', 'user', 'action', 'clientAddress', 'result']) delete details[k];
        cell(tr, Object.entries(details).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('; '));
        tbody.append(tr);
      }
      $('audit-count').textContent = total === 0 ? 'No records match.' : `Records ${offset + 1}–${offset + r.entries.length} of ${total}.`;
      $('audit-prev').disabled = offset === 0;
      $('audit-next').disabled = offset + PAGE >= total;
    };
    const run = async () => {
      try {
        await load();
      } catch (err) {
        showError(err);
      }
    };
    try {
      await load();
    } catch (err) {
      showError(err);
      for (const id of ['audit-filter', 'audit-pages', 'audit-export']) $(id).hidden = true;
      return;
    }
    $('audit-filter').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      $('message').hidden = true;
      offset = 0;
      await run();
    });
    $('audit-prev').addEventListener('click', async () => {
      offset = Math.max(0, offset - PAGE);
      await run();
    });
    $('audit-next').addEventListener('click', async () => {
      offset += PAGE;
      await run();
    });
  },

  async allowlist() {
    const me = await signedIn();
    if (!me) return;
    const form = $('allowlist-form');
    const fill = (r) => {
      $('allowlist-cidrs').value = (r.cidrs || []).join('\n');
      $('your-address').textContent = r.yourAddress || '';
      $('you-admitted').textContent = r.youAreAdmitted ? 'admitted by the list' : 'NOT admitted by the list';
      $('allowlist-updated').textContent = r.updatedAt ? `Last changed ${when(r.updatedAt)} by ${r.updatedBy}.` : 'No list has been set.';
      form.setAttribute('aria-busy', 'false');
    };
    try {
      fill(await api('GET', '/api/v1/allow-list'));
    } catch (err) {
      showError(err);
      form.hidden = true;
      return;
    }
    if (!(me.user.roles || []).includes('tenant_admin')) {
      $('allowlist-cidrs').readOnly = true;
      form.querySelector('button[type="submit"]').hidden = true;
    }
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const cidrs = $('allowlist-cidrs').value.split('\n').map((l) => l.trim()).filter((l) => l !== '');
      const body = { cidrs };
      if (!$('allowlist-confirm').hidden && $('confirmLockout').checked) body.confirmLockout = true;
      try {
        fill(await api('PUT', '/api/v1/allow-list', body));
        $('allowlist-confirm').hidden = true;
        $('confirmLockout').checked = false;
        show('The allow-list was saved.', 'ok');
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) $('allowlist-confirm').hidden = false;
        showError(err);
      }
    });
  },

  async blocks() {
    const me = await signedIn();
    if (!me) return;
    const admin = (me.user.roles || []).includes('tenant_admin');
    const load = async () => {
      const { blocks } = await api('GET', '/api/v1/blocks');
      const tbody = $('blocks').tBodies[0];
      tbody.replaceChildren();
      for (const b of blocks) {
        const tr = document.createElement('tr');
        tr.dataset.address = b.address;
        cell(tr, b.address);
        cell(tr, when(b.until));
        cell(tr, String(b.banCount));
        cell(tr, String(b.failuresHere));
        const actions = cell(tr, '');
        if (!b.liftable) actions.textContent = 'Platform administrator only';
        else if (admin) {
          const lift = button('Lift', async () => {
            try {
              await api('DELETE', `/api/v1/blocks/${encodeURIComponent(b.address)}`);
              show(`The block of ${b.address} was lifted.`, 'ok');
              await load();
            } catch (err) {
              showError(err);
            }
          });
          lift.setAttribute('aria-label', `Lift the block of ${b.address}`);
          actions.append(lift);
        }
        tbody.append(tr);
      }
      $('blocks-empty').hidden = blocks.length > 0;
    };
    await load();
  },

  async totp() {
    const me = await signedIn();
    if (!me) return;
    if (me.secondFactor === 'enrol') show('Your account must use two-step sign-in: set it up to continue.', 'notice');
    $('totp-begin').addEventListener('click', async () => {
      try {
        const e = await api('POST', '/api/v1/me/totp/enrol');
        $('totp-secret').textContent = e.secretGrouped || e.secret;
        $('totp-uri').textContent = e.uri;
        $('totp-expires').textContent = when(e.expiresAt);
        $('totp-start').hidden = true;
        $('totp-setup').hidden = false;
        $('message').hidden = true;
        $('totp-code').focus();
      } catch (err) {
        showError(err);
      }
    });
    $('totp-confirm-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const r = await api('POST', '/api/v1/me/totp/confirm', { code: $('totp-code').value.trim() });
        // a pending (enrol) session was replaced by a full one: its CSRF token too
        if (r.csrfToken) csrf = r.csrfToken;
        const list = $('recovery-codes');
        list.replaceChildren();
        for (const c of r.recoveryCodes || []) {
          const li = document.createElement('li');
          const code = document.createElement('code');
          code.textContent = c;
          li.append(code);
          list.append(li);
        }
        // the key is not left on screen
        $('totp-secret').textContent = '';
        $('totp-uri').textContent = '';
        $('totp-setup').hidden = true;
        $('totp-done').hidden = false;
        // a password that must be changed comes next (the new full session may do it)
        if (r.passwordChangeRequired) {
          $('totp-continue').href = '/password?required=1';
          $('totp-continue').textContent = 'Continue: change your password';
        }
        show('Two-step sign-in is on.', 'ok');
      } catch (err) {
        $('totp-code').value = '';
        showError(err);
      }
    });
  },
};

async function main() {
  wireSignOut();
  const run = pages[document.body.dataset.page];
  if (!run) return;
  try {
    await run();
  } catch (err) {
    showError(err);
  }
  document.body.dataset.ready = 'true';
}

void main();
