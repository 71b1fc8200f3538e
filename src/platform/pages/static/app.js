/* global document, fetch, location, URLSearchParams */
// The platform pages' only script (an ES module; no framework, no build step). It talks
// to the JSON API with fetch (same-origin credentials, the CSRF token /api/v1/me or sign-in
// gives in X-CSRF-Token) and shows the API's sanitized error messages. Text is always set
// with textContent, never as HTML. A sensitive change the API refuses with
// REAUTH_REQUIRED opens a dialog that asks for the password (and the authenticator code
// when the account has one), sends it to POST /api/v1/auth/reauth and retries the change.

let csrf;
/** How the signed-in user re-authenticates (GET /api/v1/me): password, password+totp or sso. */
let reauthMethod = 'password';

class ApiError extends Error {
  constructor(status, message, ref, code) {
    super(message);
    this.status = status;
    this.ref = ref;
    this.code = code;
  }
}

/** A call to the API; a REAUTH_REQUIRED refusal asks the user to re-authenticate, then retries once. */
async function api(method, url, body) {
  try {
    return await call(method, url, body);
  } catch (err) {
    if (!(err instanceof ApiError) || err.code !== 'REAUTH_REQUIRED' || url === '/api/v1/auth/reauth') throw err;
    if (!(await reauthenticate())) throw err;
    return call(method, url, body);
  }
}

async function call(method, url, body) {
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
    throw new ApiError(r.status, typeof e.message === 'string' ? e.message : `The request failed (HTTP ${r.status}).`, e.correlation_id, e.code);
  }
  return data;
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

/**
 * The re-authentication dialog: resolves true once POST /api/v1/auth/reauth accepted the
 * password (and code), false when the user cancels. An account that signs in through SSO
 * is told to sign in again that way.
 */
function reauthenticate() {
  return new Promise((resolve) => {
    const sso = reauthMethod === 'sso';
    const message = el('p', { id: 'reauth-message', role: 'alert', 'aria-live': 'assertive' });
    const password = el('input', { id: 'reauth-password', type: 'password', autocomplete: 'current-password', required: '' });
    const code = el('input', { id: 'reauth-code', inputmode: 'numeric', autocomplete: 'one-time-code' });
    const fields = sso
      ? [el('p', { text: 'Your account signs in through your organisation’s single sign-on: sign in again that way, then repeat the change.' })]
      : [
          el('label', { for: 'reauth-password', text: 'Password' }),
          password,
          ...(reauthMethod === 'password+totp' ? [el('label', { for: 'reauth-code', text: 'Code from your authenticator app (or a recovery code)' }), code] : []),
        ];
    const confirm = el('button', { type: 'submit', text: 'Confirm' });
    const cancel = el('button', { type: 'button', text: 'Cancel' });
    const form = el('form', { method: 'dialog', novalidate: '' }, [
      el('h2', { id: 'reauth-title', text: 'Confirm it is you' }),
      el('p', { text: 'This change needs your identity confirmed again.' }),
      ...fields,
      message,
      ...(sso ? [el('a', { href: '/signin', text: 'Sign in again' })] : [confirm]),
      cancel,
    ]);
    const dialog = el('dialog', { id: 'reauth-dialog', 'aria-labelledby': 'reauth-title' }, [form]);
    let settled = false;
    const finish = (ok) => {
      if (settled) return;
      settled = true;
      password.value = '';
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    cancel.addEventListener('click', () => finish(false));
    dialog.addEventListener('cancel', () => finish(false));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (sso) return;
      const body = { password: password.value };
      const c = code.value.trim();
      if (reauthMethod === 'password+totp' && c !== '') {
        if (/^\d{6,8}$/.test(c)) body.code = c;
        else body.recoveryCode = c;
      }
      confirm.disabled = true;
      try {
        await call('POST', '/api/v1/auth/reauth', body);
        finish(true);
      } catch (err) {
        password.value = '';
        code.value = '';
        confirm.disabled = false;
        // too many wrong passwords lock the account and end its sessions
        if (err instanceof ApiError && err.status === 401 && err.code === 'AUTH_FAILED' && /^Not signed in/.test(err.message)) location.assign('/signin');
        message.textContent = err instanceof ApiError ? err.message : 'The server could not be reached. Try again.';
        password.focus();
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    if (!sso) password.focus();
  });
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
    if (me.reauthMethod) reauthMethod = me.reauthMethod;
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
    // the organisation's single sign-on buttons, for the tenant typed in (an unknown tenant offers none, like one without SSO)
    const SSO_LABELS = { oidc: 'OpenID Connect', saml: 'SAML' };
    let asked = '';
    const offerSso = async () => {
      const tenant = $('tenant').value.trim();
      if (tenant === asked) return;
      asked = tenant;
      const box = $('sso');
      let methods = [];
      if (/^[a-z0-9][a-z0-9-]{0,62}$/i.test(tenant)) {
        try {
          methods = (await api('GET', `/api/v1/auth/sso/${encodeURIComponent(tenant)}/methods`)).methods || [];
        } catch {
          methods = [];
        }
      }
      if (asked !== tenant) return;
      box.replaceChildren(
        ...methods
          .filter((m) => m in SSO_LABELS)
          .map((m) => el('a', { class: 'sso-button', href: `/api/v1/auth/sso/${encodeURIComponent(tenant)}/${m}/start`, text: `Sign in with your organisation’s SSO (${SSO_LABELS[m]})` })),
      );
      box.hidden = box.childElementCount === 0;
    };
    // the organisation's notice, shown before sign-in; signing in means accepting it
    let noticeFor = '';
    const offerNotice = async () => {
      const tenant = $('tenant').value.trim();
      if (tenant === noticeFor) return;
      noticeFor = tenant;
      let text = '';
      if (/^[a-z0-9][a-z0-9-]{0,62}$/i.test(tenant)) {
        try {
          text = (await api('GET', `/api/v1/auth/disclaimer/${encodeURIComponent(tenant)}`)).disclaimer || '';
        } catch {
          text = '';
        }
      }
      if (noticeFor !== tenant) return;
      $('disclaimer-text').textContent = text;
      $('accept-disclaimer').checked = false;
      $('disclaimer').hidden = text === '';
    };
    const onTenant = () => void Promise.all([offerSso(), offerNotice()]);
    $('tenant').addEventListener('change', onTenant);
    $('tenant').addEventListener('blur', onTenant);
    if ($('tenant').value.trim() !== '') await Promise.all([offerSso(), offerNotice()]);
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
      await offerNotice();
      if (!$('disclaimer').hidden && !$('accept-disclaimer').checked) {
        show('Read the notice above and confirm that you are authorised to proceed.', 'error');
        $('accept-disclaimer').focus();
        return;
      }
      const body = { tenant: $('tenant').value.trim(), username: $('username').value.trim(), password: $('password').value };
      if (!$('disclaimer').hidden) body.acceptDisclaimer = true;
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
          // roles: one role per user from this page (the API takes a list)
          const role = document.createElement('select');
          role.setAttribute('aria-label', `Role of ${u.username}`);
          for (const r of ['member', 'auditor', 'tenant_admin']) {
            const o = document.createElement('option');
            o.value = r;
            o.textContent = r;
            o.selected = (u.roles || []).length === 1 && u.roles[0] === r;
            role.append(o);
          }
          const set = button('Set role', async () => {
            try {
              await api('PATCH', `/api/v1/users/${encodeURIComponent(u.id)}`, { roles: [role.value] });
              show(`${u.username} now has the role ${role.value}.`, 'ok');
              await load();
            } catch (err) {
              showError(err);
            }
          });
          set.setAttribute('aria-label', `Set the role of ${u.username}`);
          actions.append(b, role, set);
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
    const numbers = ['minPasswordLength', 'maxFailedAttempts', 'failureWindowSeconds', 'lockoutSeconds', 'passwordExpiryDays', 'sessionIdleSeconds', 'sessionAbsoluteSeconds', 'reauthWindowSeconds'];
    const fill = (policy) => {
      for (const k of numbers) $(k).value = String(policy[k]);
      $('rejectCommonPasswords').checked = policy.rejectCommonPasswords === true;
      $('lockoutScope').value = policy.lockoutScope === 'address' ? 'address' : 'account';
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
      const body = { rejectCommonPasswords: $('rejectCommonPasswords').checked, lockoutScope: $('lockoutScope').value };
      for (const k of numbers) body[k] = Number($(k).value);
      try {
        fill((await api('PUT', '/api/v1/policy', body)).policy);
        show('The policy was saved.', 'ok');
      } catch (err) {
        showError(err);
      }
    });
  },

  async sso() {
    const me = await signedIn();
    if (!me) return;
    const admin = (me.user.roles || []).includes('tenant_admin');
    const form = $('sso-form');
    const fill = (view) => {
      // the OIDC client secret never comes back: only whether one is stored
      const config = view ? { ...view } : null;
      let secret = 'none';
      if (config) {
        delete config.updatedAt;
        if (config.oidc) {
          const { clientSecretSet, ...oidc } = config.oidc;
          config.oidc = oidc;
          if (clientSecretSet) secret = 'set';
        }
      }
      $('sso-config').value = config ? JSON.stringify(config, null, 2) : '';
      $('sso-secret').textContent = secret;
      $('sso-updated').textContent = view && view.updatedAt ? `Last changed ${when(view.updatedAt)}.` : 'Single sign-on is not configured.';
      $('sso-clear').hidden = !admin || !view;
      form.setAttribute('aria-busy', 'false');
    };
    try {
      fill((await api('GET', '/api/v1/sso')).sso);
    } catch (err) {
      showError(err);
      form.hidden = true;
      return;
    }
    if (!admin) {
      $('sso-config').readOnly = true;
      form.querySelector('button[type="submit"]').hidden = true;
    }
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = JSON.parse($('sso-config').value);
      } catch {
        show('The configuration is not valid JSON.', 'error');
        return;
      }
      try {
        fill((await api('PUT', '/api/v1/sso', body)).sso);
        show('The single sign-on configuration was saved.', 'ok');
      } catch (err) {
        showError(err);
      }
    });
    $('sso-clear').addEventListener('click', async () => {
      try {
        await api('DELETE', '/api/v1/sso');
        fill(null);
        show('Single sign-on was removed.', 'ok');
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
