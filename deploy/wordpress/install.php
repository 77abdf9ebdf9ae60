<?php
/**
 * Install a local WordPress from the command line (no browser, no wp-cli: Debian has none).
 *
 * Usage: php install.php DOCROOT   (settings in IGNY8_WP_* environment variables, so that
 * no password appears in a process listing). Prints one JSON object on stdout:
 * {"installed": bool, "user_id": int, "app_password": "...", "app_password_reused": bool}.
 *
 * Steps, each safe to repeat on an installed site:
 *  1. create the database (utf8mb4) if it does not exist;
 *  2. wp_install() unless is_blog_installed(), with every outgoing HTTP request blocked
 *     (wp_install probes the site, which is not serving yet) and no mail sent;
 *  3. postname permalinks, so /wp-json/... and pretty post links work;
 *  4. an Application Password for the admin: the one given in IGNY8_WP_APP_PASSWORD if it
 *     still matches, else a new one (a previous one of the same name is revoked first,
 *     since WordPress refuses duplicate names).
 */

if (PHP_SAPI !== 'cli') {
    exit(1);
}
ini_set('display_errors', 'stderr');  // stdout carries the JSON answer only
error_reporting(E_ALL & ~E_DEPRECATED & ~E_NOTICE);

function igny8_env(string $name, ?string $default = null): string
{
    $value = getenv($name);
    if ($value === false) {
        if ($default === null) {
            fwrite(STDERR, "install.php: $name is not set\n");
            exit(2);
        }
        return $default;
    }
    return $value;
}

function igny8_create_database(): void
{
    [$host, $port] = array_pad(explode(':', igny8_env('IGNY8_WP_DB_HOST', '127.0.0.1:3306'), 2), 2, '3306');
    $name = igny8_env('IGNY8_WP_DB_NAME');
    if (!preg_match('/^[A-Za-z0-9_]{1,64}$/', $name)) {
        fwrite(STDERR, "install.php: invalid database name\n");
        exit(2);
    }
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    $db = new mysqli($host, igny8_env('IGNY8_WP_DB_USER', 'root'), igny8_env('IGNY8_WP_DB_PASSWORD', ''), '', (int) $port);
    $db->query("CREATE DATABASE IF NOT EXISTS `$name` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
    $db->close();
}

function igny8_load_wordpress(string $docroot): void
{
    $url = parse_url(igny8_env('IGNY8_WP_URL'));
    $_SERVER['HTTP_HOST'] = $url['host'] . (isset($url['port']) ? ':' . $url['port'] : '');
    $_SERVER['SERVER_NAME'] = $url['host'];
    $_SERVER['SERVER_PORT'] = (string) ($url['port'] ?? 80);
    $_SERVER['REQUEST_URI'] = '/';
    $_SERVER['REQUEST_METHOD'] = 'GET';
    define('WP_INSTALLING', true);
    require rtrim($docroot, '/') . '/wp-load.php';
    require_once ABSPATH . 'wp-admin/includes/upgrade.php';
    add_filter('pre_http_request', function () {
        return new WP_Error('igny8_offline', 'Outgoing HTTP is blocked during the install.');
    }, 10, 0);
    add_filter('pre_wp_mail', '__return_true');
}

function igny8_install(): bool
{
    if (is_blog_installed()) {
        return false;
    }
    $result = wp_install(
        igny8_env('IGNY8_WP_TITLE', 'igny8 local WordPress'),
        igny8_env('IGNY8_WP_ADMIN_USER'),
        igny8_env('IGNY8_WP_ADMIN_EMAIL', 'admin@example.com'),
        false,
        '',
        wp_slash(igny8_env('IGNY8_WP_ADMIN_PASSWORD'))
    );
    if (is_wp_error($result)) {
        fwrite(STDERR, 'wp_install failed: ' . $result->get_error_message() . "\n");
        exit(1);
    }
    return true;
}

function igny8_permalinks(): void
{
    global $wp_rewrite;
    if (get_option('permalink_structure') !== '/%postname%/') {
        $wp_rewrite->set_permalink_structure('/%postname%/');
        $wp_rewrite->flush_rules(false);  // false: no .htaccess, PHP's server needs none
    }
}

/** @return array{0: string, 1: bool} the password and whether it was reused */
function igny8_app_password(WP_User $user): array
{
    $name = igny8_env('IGNY8_WP_APP_NAME', 'igny8');
    $given = preg_replace('/[^a-z\d]/i', '', igny8_env('IGNY8_WP_APP_PASSWORD', ''));
    foreach (WP_Application_Passwords::get_user_application_passwords($user->ID) as $item) {
        if ($given !== '' && wp_check_password($given, $item['password'], $user->ID)) {
            return [$given, true];
        }
    }
    foreach (WP_Application_Passwords::get_user_application_passwords($user->ID) as $item) {
        if ($item['name'] === $name) {
            WP_Application_Passwords::delete_application_password($user->ID, $item['uuid']);
        }
    }
    $created = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => $name]);
    if (is_wp_error($created)) {
        fwrite(STDERR, 'application password: ' . $created->get_error_message() . "\n");
        exit(1);
    }
    return [$created[0], false];
}

$docroot = $argv[1] ?? '';
if ($docroot === '' || !is_file($docroot . '/wp-load.php')) {
    fwrite(STDERR, "usage: php install.php DOCROOT (a WordPress tree with wp-config.php)\n");
    exit(2);
}
igny8_create_database();
igny8_load_wordpress($docroot);
$installed = igny8_install();
igny8_permalinks();
$user = get_user_by('login', igny8_env('IGNY8_WP_ADMIN_USER'));
if (!$user) {
    fwrite(STDERR, "install.php: the admin user does not exist in this database\n");
    exit(1);
}
[$password, $reused] = igny8_app_password($user);
echo json_encode([
    'installed' => $installed,
    'user_id' => $user->ID,
    'app_password' => $password,
    'app_password_reused' => $reused,
]), "\n";
