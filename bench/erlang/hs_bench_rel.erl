%% release_upgrade_N on Erlang/OTP: a relup evaluated by release_handler.
%%
%% Each round builds, in a fresh directory, an application hs_rel in two versions
%% (lib/hs_rel-1, lib/hs_rel-2: the three gen_server modules hs_rel_a/b/c, whose vsn 2
%% code_change doubles the state, and hs_rel_sup), an appup
%% ({update, M, {advanced, []}} for each of the three), two .rel files (kernel,
%% stdlib, sasl and hs_rel), the relup (systools:make_relup) and release 2's boot script.  It writes RELEASES
%% with release 1 permanent (release_handler:create_RELEASES), starts sasl with that
%% releases_dir, starts hs_rel 1 and N servers spread over the three modules (children
%% of simple_one_for_one supervisors whose child specs list the module), marks release
%% 2 unpacked (set_unpacked), and times release_handler:install_release("2"): the
%% relup's load_object_code, point_of_no_return, suspend, load, code_change and resume.
%% Every state is checked afterwards (doubled); then everything is stopped and removed.
-module(hs_bench_rel).
-export([round/2]).

round(N, SrcDir) ->
    Root = filename:join("/tmp", "hs_rel_" ++ os:getpid() ++ "_" ++
                             integer_to_list(erlang:unique_integer([positive]))),
    try round(N, SrcDir, Root)
    after
        cleanup(Root)
    end.

round(N, SrcDir, Root) ->
    RelDir = filename:join(Root, "releases"),
    Lib = fun(V) -> filename:join([Root, "lib", "hs_rel-" ++ V]) end,
    Ebin = fun(V) -> filename:join(Lib(V), "ebin") end,
    Mods = [hs_rel_a, hs_rel_b, hs_rel_c],
    [begin
         ok = filelib:ensure_dir(filename:join(Ebin(V), "x")),
         Defs = case V of "2" -> [{d, 'V2'}]; _ -> [] end,
         [begin
              {ok, M, Beam} = compile:file(filename:join(SrcDir, "hs_bench_rs"),
                                           [binary, {d, 'MOD', M}, return_errors | Defs]),
              ok = file:write_file(filename:join(Ebin(V), atom_to_list(M) ++ ".beam"), Beam)
          end || M <- Mods],
         {ok, _} = compile:file(filename:join(SrcDir, "hs_rel_sup"),
                                [{outdir, Ebin(V)}, return_errors]),
         App = {application, hs_rel,
                [{description, "hotswap release bench"}, {vsn, V},
                 {modules, [hs_rel_sup | Mods]}, {registered, [hs_rel_top | Mods]},
                 {applications, [kernel, stdlib]}, {mod, {hs_rel_sup, []}}]},
         ok = file:write_file(filename:join(Ebin(V), "hs_rel.app"),
                              io_lib:format("~p.~n", [App]))
     end || V <- ["1", "2"]],
    Up = [{update, M, {advanced, []}} || M <- Mods],
    ok = file:write_file(filename:join(Ebin("2"), "hs_rel.appup"),
                         io_lib:format("~p.~n", [{"2", [{"1", Up}], [{"1", Up}]}])),
    Vsn = fun(A) -> application:load(A), {ok, X} = application:get_key(A, vsn), X end,
    Rel = fun(V) ->
                  F = filename:join([Root, "rel", "hs_rel-" ++ V]),
                  ok = filelib:ensure_dir(F),
                  ok = file:write_file(
                         F ++ ".rel",
                         io_lib:format("~p.~n",
                                       [{release, {"hs_rel", V}, {erts, erlang:system_info(version)},
                                         [{kernel, Vsn(kernel)}, {stdlib, Vsn(stdlib)},
                                          {sasl, Vsn(sasl)}, {hs_rel, V}]}])),
                  F
          end,
    R1 = Rel("1"),
    R2 = Rel("2"),
    ok = filelib:ensure_dir(filename:join(RelDir, "x")),
    ok = release_handler:create_RELEASES(code:root_dir(), RelDir, R1 ++ ".rel",
                                         [{hs_rel, "1", filename:join(Root, "lib")}]),
    _ = application:stop(sasl),
    ok = application:set_env(sasl, releases_dir, RelDir),
    ok = application:start(sasl),
    true = code:add_patha(Ebin("1")),
    ok = application:start(hs_rel),
    Per = N div 3,
    Pids = [begin
                {ok, P} = supervisor:start_child(lists:nth(1 + I rem 3, Mods), [I]),
                P
            end || I <- lists:seq(0, 3 * Per - 1)],
    {ok, "2"} = release_handler:set_unpacked(R2 ++ ".rel", [{hs_rel, "2", filename:join(Root, "lib")}]),
    case systools:make_relup(R2, [R1], [R1],
                             [{path, [Ebin("1"), Ebin("2")]},
                              {outdir, filename:join(RelDir, "2")}, silent]) of
        {ok, _, _, _} -> ok;
        Err -> error({make_relup, Err})
    end,
    true = filelib:is_regular(filename:join([RelDir, "2", "relup"])),
    case systools:make_script(R2, [{path, [Ebin("2")]}, {outdir, filename:join(RelDir, "2")},
                                   silent]) of
        {ok, _, _} -> ok;
        Err2 -> error({make_script, Err2})
    end,
    {ok, _} = file:copy(filename:join([RelDir, "2", "hs_rel-2.boot"]),
                        filename:join([RelDir, "2", "start.boot"])),
    T0 = erlang:monotonic_time(nanosecond),
    {ok, "1", _} = release_handler:install_release("2"),
    T1 = erlang:monotonic_time(nanosecond),
    Bad = [P || {I, P} <- lists:zip(lists:seq(0, 3 * Per - 1), Pids),
                sys:get_state(P) =/= 2 * I],
    [] == Bad orelse error({not_upgraded, length(Bad)}),
    {T1 - T0, length(Pids)}.

cleanup(Root) ->
    _ = application:stop(hs_rel),
    _ = application:unload(hs_rel),
    [begin code:purge(M), code:delete(M), code:purge(M) end
     || M <- [hs_rel_a, hs_rel_b, hs_rel_c, hs_rel_sup]],
    [code:del_path(filename:join([Root, "lib", "hs_rel-" ++ V, "ebin"])) || V <- ["1", "2"]],
    _ = application:stop(sasl),
    _ = os:cmd("rm -rf '" ++ Root ++ "'"),
    ok.
